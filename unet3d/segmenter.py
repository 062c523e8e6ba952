"""Segmenter: load a model once, then predict masks on the exact voxel grid of each input volume."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .card import BrainEdge, ModelCard, load_card
from .chain import inside, prepare_brain
from .device import prepare_network, resolve_device, stage, to_host
from .errors import ModelLoadError, ParameterError, UnreadableVolumeError
from .geometry import Prepared, prepare, restore
from .hub import CARD_NAME, ModelSource, brain_mask_source, load_unet, model_info, resolve_source
from .inference import Progress, run_inference
from .io import Volume, load_volume, volume_from_array
from .memory import describe, require_memory
from .model import UNet3D
from .options import PRECISIONS, Mode, Precision, check_choice, check_window, resolve_threshold
from .pipeline import CaseResult, predict_cohort
from .planning import InferencePlan, memory_budget_mb, network_shape, plan_inference, predict_peak_bytes
from .postprocess import grow_edge, postprocess
from .prediction import Prediction
from .qc import assess
from .shapes import Shape3
from .stages import StageReporter

__all__ = ["Segmenter", "VolumeInput"]

logger = logging.getLogger(__name__)

VolumeInput = str | Path | Sequence[str | Path] | Volume | np.ndarray


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
        brain_mask: Segmenter | None = None,
    ) -> None:
        card.check_network(model.num_classes, model.in_channels, model.pad_multiple)
        if brain_mask is not None and brain_mask.model.num_classes != 2:
            raise ModelLoadError(
                f"the brain-extraction stage '{brain_mask.source.id}' has {brain_mask.model.num_classes} classes: it "
                "must have 2 (background, brain)"
            )
        self.precision: Precision = check_choice(precision, PRECISIONS, "precision")
        self.device = resolve_device(device)
        self.model: UNet3D = model.eval()
        self.network = prepare_network(model, self.device)
        self.card = card
        self.source: ModelSource = source
        self.max_voxels = max_voxels  # caps on the inputs `predict` reads (a service's upload limits)
        self.max_decompressed_bytes = max_decompressed_bytes
        # A chained model's first stage: the input is restricted to its brain mask, and so are the labels.
        self.brain_mask = brain_mask

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
        brain_mask = None
        if card.inference.brain_mask:
            part = brain_mask_source(resolved)
            mask_card = load_card(part.directory / CARD_NAME)
            precision = options.get("precision", "auto")
            brain_mask = cls(load_unet(part), mask_card, part, device=device, precision=precision)
        return cls(model, card, resolved, device=device, brain_mask=brain_mask, **options)

    def info(self) -> dict[str, Any]:
        """The model card plus the resolved id, revision and weights sha256 (and the brain-extraction stage's)."""
        first = None if self.brain_mask is None else self.brain_mask.source
        return {**model_info(self.source, self.card, first), "device": str(self.device)}

    def predict(
        self,
        volume: VolumeInput,
        *,
        tta: bool = False,
        mode: Mode = "auto",
        progress: Progress | None = None,
        probabilities: bool = False,
        threshold: float | None = None,
        patch_size: int | Shape3 | None = None,
        overlap: float | None = None,
        name: str | None = None,
        series: str | None = None,
    ) -> Prediction:
        """Segment one volume; the mask is on the input's voxel grid, whatever its orientation.

        Args:
            volume: a .nii/.nii.gz path, a DICOM series (a folder, a .zip, or a list of its files; see
                `load_volume`), a loaded `Volume`, or an `(I, J, K)` array. An array has no geometry: it
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
            series: the SeriesInstanceUID to read when a DICOM upload holds several volumetric series.

        Raises:
            ParameterError: an option is out of range or of the wrong type.
            Unet3dError: the volume cannot be segmented (unreadable, invalid, too large); the message says why.
        """
        report = self.reporter(progress)
        options = self._options(mode, threshold, patch_size, overlap, tta=tta, probabilities=probabilities)
        return self._finish(self._segment(self._read(volume, name, series, report), options, report), report)

    def predict_many(
        self,
        inputs: Iterable[VolumeInput],
        outputs: str | Path | Sequence[str | Path | None] | None = None,
        *,
        probabilities_outputs: str | Path | Sequence[str | Path | None] | None = None,
        dicom_seg_outputs: str | Path | Sequence[str | Path | None] | None = None,
        series: Sequence[str | None] | None = None,
        tta: bool = False,
        mode: Mode = "auto",
        probabilities: bool = False,
        threshold: float | None = None,
        patch_size: int | Shape3 | None = None,
        overlap: float | None = None,
        prefetch: int = 2,
        workers: int | None = None,
    ) -> Iterator[CaseResult]:
        """Segment a cohort, overlapping the stages: while the network runs on one volume, worker threads read the
        next ones and write (and summarise) the previous ones. Same masks as `predict`, in input order.

        Example:
            >>> for case in seg.predict_many(["a.nii.gz", "b.nii.gz"], "masks/"):
            ...     print(case.input, case.output if case.error is None else case.error)

        Args:
            inputs: paths, `Volume`s or arrays (as `predict` takes), read lazily, `prefetch` ahead.
            outputs: where masks go: a folder (`<folder>/<stem>_mask.nii.gz`), one path (or None) per input, or
                None (keep them in memory only, in `CaseResult.prediction`).
            probabilities_outputs: likewise for the probabilities (needs `probabilities=True`).
            dicom_seg_outputs: likewise for DICOM SEGs (`<folder>/<stem>_seg.dcm`); a case whose input is not DICOM
                then fails (a SEG references the images it was made from).
            series: per input, the SeriesInstanceUID to read (None: the upload's one volumetric series).
            tta, mode, probabilities, threshold, patch_size, overlap: as for `predict`, for every input.
            prefetch: volumes read ahead and results waiting to be written (memory: about 2·prefetch volumes).
            workers: reader and writer threads each (default: one per four cores, 1 to 4; 0 on a CPU whose cores
                the network uses, where a thread beside it slows it down: the stages then take turns).

        Yields:
            One `CaseResult` per input; a case that fails carries its `error` and the cohort goes on.

        Raises:
            ParameterError: an option is out of range (before any volume is read).
        """
        options = self._options(mode, threshold, patch_size, overlap, tta=tta, probabilities=probabilities)
        if probabilities_outputs is not None and not probabilities:
            raise ParameterError("probabilities_outputs needs probabilities=True")
        per_input = {"output paths": outputs, "probabilities output paths": probabilities_outputs,
                     "DICOM SEG paths": dicom_seg_outputs, "series UIDs": series}  # fmt: skip
        for what, named in per_input.items():
            if isinstance(named, list | tuple) and isinstance(inputs, Sized) and len(named) != len(inputs):
                raise ParameterError(f"{len(inputs)} inputs but {len(named)} {what}: give one per input")
        return predict_cohort(
            self, inputs, outputs, probabilities_outputs, options, dicom_seg_outputs=dicom_seg_outputs, series=series,
            prefetch=prefetch, workers=workers,
        )  # fmt: skip

    def reporter(self, progress: Progress | None) -> StageReporter:
        """A stage clock for one case on this segmenter's device."""
        return StageReporter(progress, self.device)

    def _read(self, volume: VolumeInput, name: str | None, series: str | None, report: StageReporter) -> _Read:
        """Host stage: the volume read and staged for the device (a pinned copy for a GPU)."""
        report("load", 0.0)
        loaded = self._load(volume, name, series)
        return _Read(loaded, stage(loaded.data, self.device))

    def _segment(self, read: _Read, options: PredictCall, report: StageReporter) -> _Segmented:
        """Device stage: prepare, plan, infer and restore where the network runs; only the uint8 mask (and any
        probabilities asked for) come back to the host, with the samples quality control reads."""
        report("preprocess", 0.0)
        brain, scan = None, None
        if self.brain_mask is None:
            prepared = prepare(read.volume, self.card, self.device, staged=read.staged)
        else:
            spec = self.card.inference
            brain, scan = self.brain_mask.brain(read, spec.brain_mask_threshold, spec.brain_mask_edge)
            prepared = prepare_brain(read.volume, read.staged, brain, self.card, self.device)
        report("infer", 0.0)
        plan = self._plan(prepared, options)
        self._require_memory(read.volume, prepared, plan, probabilities=options.probabilities)
        output = run_inference(self.network, prepared.array, plan, lambda f, _: report("infer", f))
        report("postprocess", 0.0)
        mask, probs = restore(
            output.labels, output.probabilities, prepared, options.threshold, keep=options.probabilities
        )
        if brain is not None:
            mask, probs = inside(brain, mask, probs)
        # The mask comes back in Fortran order, as NIfTI stores voxels: writing it then copies nothing.
        host_mask = to_host(mask.permute(2, 1, 0)).T
        host_probabilities = None if probs is None else to_host(probs)
        image, labels = to_host(prepared.array), to_host(output.labels)
        return _Segmented(
            read.volume, prepared, output.plan, host_mask, host_probabilities, image, labels, output.uncertainty, scan
        )

    def brain(self, read: _Read, threshold: float, edge: BrainEdge | None) -> tuple[torch.Tensor, np.ndarray]:
        """This (brain-extraction) model's mask of a volume read, on the device: bool `(I, J, K)` on the input grid,
        where the brain probability is at least `threshold`, the largest connected brain with its holes filled, and
        with an `edge`, the voxels near it where the probability reaches the edge's threshold; and the whole scan as
        this model saw it, on the host (quality control judges the scan's structure on it)."""
        prepared = prepare(read.volume, self.card, self.device, staged=read.staged)
        keep = edge is not None
        options = self._options("auto", threshold, None, None, tta=False, probabilities=keep)
        output = run_inference(self.network, prepared.array, self._plan(prepared, options), None)
        mask, probabilities = restore(output.labels, output.probabilities, prepared, options.threshold, keep=keep)
        host = postprocess(to_host(mask), largest_component=[1], holes=[1])
        if edge is not None and probabilities is not None:  # compared where they are: one byte a voxel comes back
            likely = to_host(probabilities[1] >= edge.threshold)
            host = grow_edge(host, likely, edge.within_mm, read.volume.spacing_mm)
        return torch.as_tensor(host, device=self.device) > 0, to_host(prepared.array)

    def _finish(self, segmented: _Segmented, report: StageReporter) -> Prediction:
        """Host stage: the card's clean-up on the mask, quality control, then the `Prediction`."""
        report("postprocess", 0.5)
        cleanup = self.card.postprocess
        postprocess(segmented.mask, largest_component=cleanup.largest_component, holes=cleanup.fill_holes)
        qc = assess(
            segmented.volume,
            segmented.image,
            segmented.labels,
            segmented.mask,
            segmented.uncertainty,
            self.card,
            scan=segmented.scan,
        )
        report("postprocess", 1.0)
        return replace(self._prediction(segmented, report.timings()), qc=qc)

    def _options(
        self, mode: Mode, threshold: object, patch_size: object, overlap: object, *, tta: bool, probabilities: bool
    ) -> PredictCall:
        """The call's options, checked before the volume is read (the card's defaults are filled in by `_plan`)."""
        resolved = resolve_threshold(threshold, self.model.num_classes)
        window, fraction = check_window(mode, patch_size, overlap, self.card.input.pad_to_multiple)
        return PredictCall(mode, resolved, window, fraction, tta, probabilities)

    def _load(self, volume: VolumeInput, name: str | None, series: str | None) -> Volume:
        if isinstance(volume, str | Path):
            return self._load_file(volume, name, series)
        if isinstance(volume, list | tuple) and all(isinstance(p, str | Path) for p in volume):
            return self._load_file([Path(p) for p in volume], name, series)  # the files of a DICOM series
        if series is not None:
            raise ParameterError("series= picks a series while reading a DICOM upload: pass its folder, zip or files")
        if isinstance(volume, np.ndarray):
            if volume.ndim == 4 and volume.shape[3] == 1:  # one frame, as a 4D file with one volume is read
                volume = volume[..., 0]
            volume = volume_from_array(volume, max_voxels=self.max_voxels)
        if isinstance(volume, Volume):
            return volume if name is None else replace(volume, name=name)
        raise ParameterError(
            f"predict takes a .nii/.nii.gz path, a DICOM folder or .zip, a Volume or a numpy array, got "
            f"{type(volume).__name__}: for a nibabel image pass its file name, or "
            "volume_from_array(image.get_fdata(), image.affine)"
        )

    def _load_file(self, source: str | Path | Sequence[str | Path], name: str | None, series: str | None) -> Volume:
        """A file, folder or list of files, read within this segmenter's caps (`load_volume`)."""
        if isinstance(source, str | Path) and not Path(source).exists():
            raise UnreadableVolumeError(f"no such file: '{source}'")
        limits = {"max_voxels": self.max_voxels, "max_decompressed_bytes": self.max_decompressed_bytes}
        return load_volume(source, **limits, name=name, series=series)

    def _plan(self, prepared: Prepared, options: PredictCall) -> InferencePlan:
        spec = self.card.inference
        return plan_inference(
            self.network,
            prepared.shape,
            mode=options.mode,
            patch_size=options.patch_size or spec.patch_size,
            overlap=spec.overlap if options.overlap is None else options.overlap,
            blending=spec.blending,
            device=self.device,
            memory_budget_mb=memory_budget_mb(self.device, spec.memory_budget_mb),
            pad_multiple=self.card.input.pad_to_multiple,
            precision=self.precision,
            tta=options.tta,
            threshold=options.threshold,
            # Resampled labels are taken again from the probabilities once they are back on the input's grid.
            keep_probabilities=options.probabilities or prepared.resampled,
        )

    def _require_memory(self, volume: Volume, prepared: Prepared, plan: InferencePlan, *, probabilities: bool) -> None:
        needed = predict_peak_bytes(
            self.network,
            plan,
            input_voxels=volume.data.size,
            prepared_shape=prepared.shape,
            num_classes=self.model.num_classes,
            resampled=prepared.resampled,
            probabilities=probabilities,
        )
        on_host = prepared.array.device.type == "cpu"
        held = volume.data.nbytes + (prepared.array.nbytes if on_host else 0)  # in the estimate, already allocated
        require_memory(needed - held, f"segmenting {describe(volume.data.shape)}")

    def _prediction(self, segmented: _Segmented, timings_ms: dict[str, float]) -> Prediction:
        ran = segmented.plan  # the plan that ran: an out-of-memory retry may have slid the window or moved to the CPU
        return Prediction(
            mask=segmented.mask,
            volume=segmented.volume,
            card=self.card,
            source=self.source,
            device=str(ran.device),
            mode=ran.mode,
            network_shape=network_shape(segmented.prepared.shape, ran.pad_multiple),
            threshold_used=ran.threshold,
            probabilities=segmented.probabilities,
            tta=ran.tta,
            timings_ms=timings_ms,
        )


@dataclass(frozen=True)
class _Read:
    """A volume read, and its voxels staged for the device."""

    volume: Volume
    staged: torch.Tensor


@dataclass(frozen=True)
class _Segmented:
    """What the device stage hands to the host: the mask `(I, J, K)` (and probabilities) on the input grid, and for
    quality control the network's input and labels on the prepared grid, the uncertainty inference measured and, for
    a chained model, the whole scan as its first stage saw it (before the brain was cut out)."""

    volume: Volume
    prepared: Prepared
    plan: InferencePlan
    mask: np.ndarray
    probabilities: np.ndarray | None
    image: np.ndarray
    labels: np.ndarray
    uncertainty: float | None
    scan: np.ndarray | None = None


@dataclass(frozen=True)
class PredictCall:
    """One `predict` (or `predict_many`) call's options, checked; None means the card's default."""

    mode: Mode
    threshold: float | None
    patch_size: Shape3 | None
    overlap: float | None
    tta: bool
    probabilities: bool
