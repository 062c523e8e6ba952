"""Segmenter: load a model once, then predict masks on the exact voxel grid of each input volume."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, get_args

import numpy as np
import torch

from .card import ModelCard, load_card
from .device import memory_budget_mb, prepare_network, resolve_device
from .errors import ParameterError, UnreadableVolumeError
from .hub import CARD_NAME, ModelSource, load_unet, resolve_source
from .inference import (
    InferencePlan,
    Mode,
    Precision,
    Progress,
    check_window,
    is_number,
    plan_inference,
    run_inference,
    whole_pass_bytes,
)
from .io import (
    Volume,
    canonical_orientation,
    canonical_spacing,
    from_canonical,
    load_volume,
    to_canonical,
    volume_from_array,
)
from .memory import describe, predict_bytes, require_memory
from .model import UNet3D
from .postprocess import postprocess
from .prediction import Prediction
from .preprocessing import Crop, foreground_crop, needs_resampling, normalize_minmax, resampled_shape, resize, uncrop
from .windows import labels_from_probabilities

logger = logging.getLogger(__name__)

VolumeInput = str | Path | Volume | np.ndarray
PRECISIONS: tuple[str, ...] = get_args(Precision)


class Segmenter:
    """A loaded UNet3D with its model card, ready to segment volumes.

    Example:
        >>> seg = Segmenter.from_pretrained("models/unet3d-brain-tissue")
        >>> pred = seg.predict("t1.nii.gz")
        >>> pred.save("t1_mask.nii.gz")
    """

    def __init__(
        self,
        model: UNet3D,
        card: ModelCard,
        source: ModelSource,
        *,
        device: str | torch.device = "auto",
        precision: Precision = "auto",
        max_voxels: int | None = None,
        max_decompressed_bytes: int | None = None,
    ) -> None:
        card.check_network(model.num_classes, model.in_channels, model.pad_multiple)
        if precision not in PRECISIONS:
            raise ParameterError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = resolve_device(device)
        self.model = model.eval()
        self.network = prepare_network(model, self.device)
        self.card = card
        self.source = source
        self.precision: Precision = precision
        self.max_voxels = max_voxels  # caps on the inputs `predict` reads (a service's upload limits)
        self.max_decompressed_bytes = max_decompressed_bytes

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        revision: str | None = None,
        device: str | torch.device = "auto",
        *,
        token: str | None = None,
        **options: Any,
    ) -> Segmenter:
        """Load a model directory, a `.safetensors` file, or a Hub repo id (weights are safetensors, strict).

        Args:
            source: local directory / file, or `owner/name` on the Hub.
            revision: branch, tag or commit sha for Hub sources.
            device: "auto", "cpu", "cuda" or "cuda:N".
            token: Hub token for private repos (default: HF_TOKEN).
            **options: forwarded to `Segmenter(...)`: precision, and the input caps max_voxels (any input) and
                max_decompressed_bytes (a file's data, as `load_volume` applies them).
        """
        resolved = resolve_source(source, revision, token=token)
        model = load_unet(resolved)
        card = load_card(resolved.directory / CARD_NAME)
        return cls(model, card, resolved, device=device, **options)

    def info(self) -> dict[str, Any]:
        """The model card plus the resolved id, revision and weights sha256."""
        return {**self.card.to_dict(), **self.source.as_dict(), "device": str(self.device)}

    def predict(
        self,
        volume: VolumeInput,
        *,
        tta: bool = False,
        mode: Mode = "auto",
        progress: Progress | None = None,
        probabilities: bool = False,
        threshold: float | None = None,
        patch_size: int | tuple[int, int, int] | None = None,
        overlap: float | None = None,
        name: str | None = None,
    ) -> Prediction:
        """Segment one volume; the mask is on the input's voxel grid, whatever its orientation.

        Args:
            volume: a .nii/.nii.gz path, a loaded `Volume`, or an `(I, J, K)` array. An array has no geometry: it
                is taken as 1 mm voxels in RAS order; wrap it with `volume_from_array(array, affine)` to give its
                own (spacing matters: the model resamples to its card's spacing, and volumes are reported in mL).
            tta: average over flips along each axis (4× the time).
            mode: "auto" (whole pass if it fits the memory budget), "whole" or "sliding".
            progress: called with (fraction in [0, 1], stage name).
            probabilities: also return `(C, I, J, K)` class probabilities.
            threshold: foreground probability cut-off, binary models only, in (0, 1).
            patch_size: sliding-window size, one int (a cube) or three, multiples of the card's pad_to_multiple.
            overlap: sliding-window overlap in [0, 1).
            name: the input's display name for the summary and output names (default: the file's, or the
                Volume's); e.g. an uploaded file's own name when `volume` is the server's copy of it.

        Raises:
            ParameterError: an option is out of range or of the wrong type.
            Unet3dError: the volume cannot be segmented (unreadable, invalid, too large); the message says why.
        """
        report = _Reporter(progress)
        threshold = self._check_options(mode, threshold)
        patch_size, overlap = check_window(mode, patch_size, overlap, self.card.input.pad_to_multiple)
        report("load", 0.0)
        vol = self._load(volume, name)
        report("preprocess", 0.0)
        prepared = self._preprocess(vol)
        report("infer", 0.0)
        spec = self.card.inference
        plan = plan_inference(
            self.network,
            prepared.array.shape,  # type: ignore[arg-type]
            mode=mode,
            patch_size=patch_size or spec.patch_size,
            overlap=spec.overlap if overlap is None else overlap,
            blending=spec.blending,
            device=self.device,
            memory_budget_mb=memory_budget_mb(self.device, spec.memory_budget_mb),
            pad_multiple=self.card.input.pad_to_multiple,
            precision=self.precision,
            tta=tta,
            threshold=threshold,
            keep_probabilities=probabilities or prepared.resampled,
        )
        self._require_memory(vol, prepared, plan, probabilities=probabilities)
        output = run_inference(self.network, prepared.array, plan, lambda f, _: report("infer", f))
        report("postprocess", 0.0)
        mask, probs = self._restore(output.labels, output.probabilities, prepared, threshold, keep=probabilities)
        cleanup = self.card.postprocess
        postprocess(mask, largest_component=cleanup.largest_component, holes=cleanup.fill_holes)
        report("postprocess", 1.0)
        return Prediction(
            mask=mask,
            volume=vol,
            card=self.card,
            source=self.source,
            # The plan that ran: an out-of-memory retry may have slid the window or moved to the CPU.
            device=str(output.plan.device),
            mode=output.plan.mode,
            network_shape=_network_shape(prepared.array.shape, output.plan),
            threshold_used=threshold,
            probabilities=probs,
            tta=output.plan.tta,
            timings_ms=report.timings(),
        )

    def _check_options(self, mode: str, threshold: float | None) -> float | None:
        if threshold is not None and not is_number(threshold):
            raise ParameterError(f"threshold must be a number in (0, 1), got {threshold!r}")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ParameterError(f"threshold must be in (0, 1), got {threshold}")
        if self.model.num_classes > 2:
            if threshold is not None:
                raise ParameterError(
                    f"threshold applies to binary models only; this model has {self.model.num_classes} classes and "
                    "labels each voxel with its most probable class: leave threshold out"
                )
            return None
        return 0.5 if threshold is None else float(threshold)

    def _load(self, volume: VolumeInput, name: str | None) -> Volume:
        if isinstance(volume, np.ndarray):
            if volume.ndim == 4 and volume.shape[3] == 1:  # one frame, as a 4D file with one volume is read
                volume = volume[..., 0]
            volume = volume_from_array(volume, max_voxels=self.max_voxels)
        if isinstance(volume, Volume):
            return volume if name is None else replace(volume, name=name)
        if not isinstance(volume, str | Path):
            raise ParameterError(
                f"predict takes a .nii/.nii.gz path, a Volume or a numpy array, got {type(volume).__name__}: "
                "for a nibabel image pass its file name, or volume_from_array(image.get_fdata(), image.affine)"
            )
        if not Path(volume).exists():
            raise UnreadableVolumeError(f"no such file: '{volume}'")
        return load_volume(
            volume, max_voxels=self.max_voxels, max_decompressed_bytes=self.max_decompressed_bytes, name=name
        )

    def _preprocess(self, volume: Volume) -> _Prepared:
        orientation = canonical_orientation(volume)
        canonical = to_canonical(volume.data, orientation)
        normalized = normalize_minmax(canonical, self.card.input.clip_percentiles)
        spec = self.card.inference
        crop = foreground_crop(normalized, spec.crop_margin) if spec.crop_foreground else None
        array = normalized[crop.slices] if crop else normalized
        spacing = canonical_spacing(volume, orientation)
        target = self.card.input.spacing_mm
        resampled = target is not None and needs_resampling(spacing, target)
        cropped_shape: tuple[int, int, int] = array.shape  # type: ignore[assignment]
        if resampled and target is not None:
            array = resize(array, resampled_shape(cropped_shape, spacing, target))
        return _Prepared(np.ascontiguousarray(array), orientation, crop, cropped_shape, resampled)

    def _require_memory(self, volume: Volume, prepared: _Prepared, plan: InferencePlan, *, probabilities: bool) -> None:
        shape = prepared.array.shape
        window = plan.window(_network_shape(shape, plan))
        on_host = plan.device.type == "cpu"  # on a GPU the activations live in its own memory
        activations = whole_pass_bytes(self.network, window, plan.precision, plan.pad_multiple) if on_host else 0.0
        needed = predict_bytes(
            volume.data.size,
            prepared.array.size,
            self.model.num_classes,
            activation_bytes=activations,
            stitch_bytes=_stitch_bytes(shape, window, self.model.num_classes) if plan.is_stitched else 0,
            resampled=prepared.resampled,
            probabilities=probabilities,
        )
        held = volume.data.nbytes + prepared.array.nbytes
        require_memory(needed - held, f"segmenting {describe(volume.data.shape)}")

    def _restore(
        self,
        labels: np.ndarray,
        probabilities: np.ndarray | None,
        prepared: _Prepared,
        threshold: float | None,
        *,
        keep: bool,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if prepared.resampled and probabilities is not None:
            probabilities = resize(probabilities, prepared.cropped_shape)
            labels = _labels(probabilities, threshold)
        if not keep:
            probabilities = None
        if prepared.crop is not None:
            labels = uncrop(labels, prepared.crop)
            if probabilities is not None:
                probabilities = _uncrop_probabilities(probabilities, prepared.crop)
        mask = from_canonical(labels, prepared.orientation).astype(np.uint8, copy=False)
        if probabilities is not None:
            probabilities = from_canonical(probabilities, prepared.orientation)
        return mask, probabilities


@dataclass(frozen=True)
class _Prepared:
    """The network-ready array and what is needed to map results back to the input grid."""

    array: np.ndarray
    orientation: np.ndarray
    crop: Crop | None
    cropped_shape: tuple[int, int, int]
    resampled: bool


class _Reporter:
    """Tracks time per stage and forwards overall progress (stages weighted by their usual cost)."""

    WEIGHTS: ClassVar[dict[str, tuple[float, float]]] = {
        "load": (0.0, 0.05),
        "preprocess": (0.05, 0.1),
        "infer": (0.1, 0.9),
        "postprocess": (0.9, 1.0),
    }

    def __init__(self, callback: Progress | None) -> None:
        self.callback = callback
        self.stage: str | None = None
        self.started = time.perf_counter()
        self.elapsed: dict[str, float] = {}

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.perf_counter()
        if stage != self.stage:
            if self.stage is not None:
                self.elapsed[self.stage] = self.elapsed.get(self.stage, 0.0) + (now - self.started) * 1000.0
            self.stage, self.started = stage, now
        if self.callback is not None and stage in self.WEIGHTS:
            low, high = self.WEIGHTS[stage]
            self.callback(low + (high - low) * fraction, stage)

    def timings(self) -> dict[str, float]:
        self("done", 0.0)
        return {stage: self.elapsed.get(stage, 0.0) for stage in ("load", "preprocess", "infer", "postprocess")}


def _stitch_bytes(shape: tuple[int, ...], window: tuple[int, ...], num_classes: int) -> int:
    """The blending buffers: class sums and weights for one window's depth across the volume (see SlabAggregator)."""
    return 4 * (num_classes + 1) * min(window[0], shape[0]) * shape[1] * shape[2]


def _labels(probabilities: np.ndarray, threshold: float | None) -> np.ndarray:
    return labels_from_probabilities(torch.from_numpy(probabilities), threshold).numpy()


def _uncrop_probabilities(probabilities: np.ndarray, crop: Crop) -> np.ndarray:
    background = np.zeros((probabilities.shape[0], 1, 1, 1), dtype=np.float32)
    background[0] = 1.0
    full = np.broadcast_to(background, (probabilities.shape[0], *crop.full_shape)).copy()
    i, j, k = crop.slices
    full[:, i, j, k] = probabilities
    return full


def _network_shape(shape: tuple[int, ...], plan: InferencePlan) -> tuple[int, int, int]:
    return tuple(-(-s // plan.pad_multiple) * plan.pad_multiple for s in shape)  # type: ignore[return-value]
