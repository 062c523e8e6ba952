"""The segmentation service: the loaded model, its inference slots and the input limits, shared by API and UI."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unet3d import Prediction, Segmenter
from unet3d.errors import CardError, InvalidVolumeError, ModelLoadError, ParameterError, UnsupportedFormatError
from unet3d.formats import looks_like_dicom
from unet3d.geometry import same_grid
from unet3d.io import Volume, VolumeSource, check_volume, load_mask, load_volume
from unet3d.options import Mode, check_threshold, resolve_threshold
from unet3d.stats import label_masks, mask_statistics

from .limits import InferenceSlots
from .settings import Settings

logger = logging.getLogger(__name__)

MAX_STATS_CLASSES = 1024  # POST /v1/stats answers one entry per class: a bound on the answer's size
Progress = Callable[[float, str], None]


class SettingsConflictError(ModelLoadError):
    """The model loads, but a UNET3D_* setting contradicts it (the message names the setting and the fix)."""


@dataclass(frozen=True)
class PredictOptions:
    """Per-request options (see `Segmenter.predict`)."""

    tta: bool = False
    mode: Mode = "auto"
    threshold: float | None = None
    probabilities: bool = False
    series: str | None = None  # DICOM: the SeriesInstanceUID to read


@dataclass(frozen=True)
class Limits:
    """Input caps applied before any voxel data is read (None: no cap)."""

    max_voxels: int | None
    max_decompressed_bytes: int | None


class SegmentationService:
    """A `Segmenter` behind `InferenceSlots`; the segmenter carries the deployment's input limits."""

    def __init__(self, segmenter: Segmenter, slots: InferenceSlots, *, default_threshold: float | None = None) -> None:
        self.segmenter = segmenter
        self.slots = slots
        self.default_threshold = default_threshold

    @property
    def limits(self) -> Limits:
        """The input caps: the segmenter's, which `check`, `predict` and `statistics` apply alike."""
        return Limits(self.segmenter.max_voxels, self.segmenter.max_decompressed_bytes)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, observe_seconds: Callable[[float], None] | None = None
    ) -> SegmentationService:
        """Load the model named by the settings and apply the card overrides (threshold, clipping, padding).

        Raises:
            ModelLoadError: the model cannot be found or loaded, or an override contradicts the network.
        """
        segmenter = Segmenter.from_pretrained(
            settings.model,
            settings.model_revision,
            device=settings.device,
            max_voxels=settings.max_voxels,
            max_decompressed_bytes=settings.max_decompressed_bytes,
            precision=settings.precision,
        )
        _apply_card_overrides(segmenter, settings)
        try:
            classes = segmenter.model.num_classes
            resolve_threshold(settings.default_threshold, classes, "UNET3D_DEFAULT_THRESHOLD", remedy="unset it")
        except ParameterError as e:
            raise SettingsConflictError(str(e)) from e
        slots = InferenceSlots(settings.max_concurrency, settings.queue_size, observe_seconds=observe_seconds)
        return cls(segmenter, slots, default_threshold=settings.default_threshold)

    def info(self) -> dict[str, Any]:
        """The model card plus id, revision, sha256 and device; classes always carry index, name and colour."""
        info = self.segmenter.info()
        info["classes"] = [{"index": c.index, "name": c.name, "color": c.color} for c in self.segmenter.card.classes]
        return info

    def options(
        self,
        *,
        tta: bool = False,
        mode: Mode = "auto",
        threshold: float | None = None,
        probabilities: bool = False,
        series: str | None = None,
    ) -> PredictOptions:
        """Per-request options with the deployment's default threshold (UNET3D_DEFAULT_THRESHOLD) filled in.

        Raises:
            ParameterError: the threshold is out of range (refused before an upload is read; whether the model takes
                one at all is the Segmenter's to say).
        """
        chosen = self.default_threshold if threshold is None else check_threshold(threshold)
        return PredictOptions(tta=tta, mode=mode, threshold=chosen, probabilities=probabilities, series=series)

    def check(self, path: VolumeSource, *, dicom_seg: bool = False) -> None:
        """Validate format, dimensionality, voxel count and decompressed size from the header alone (quick: the
        data itself is verified when `predict` loads it); for a DICOM upload, what its zip index or file list
        gives away (`unet3d.io.check_volume`). With `dicom_seg`, refuse an input that is not DICOM up front.

        Raises:
            UnsupportedFormatError: `dicom_seg` for a NIfTI input (a SEG must reference DICOM images).
        """
        if dicom_seg and not looks_like_dicom(path):
            raise UnsupportedFormatError(
                "format=dicom-seg returns a DICOM SEG, which references the DICOM images it segments, but the upload "
                "is a NIfTI volume: ask for format=nifti (the default), or send the DICOM series (a .zip or its "
                ".dcm files)"
            )
        limits = self.limits
        check_volume(path, max_voxels=limits.max_voxels, max_decompressed_bytes=limits.max_decompressed_bytes)

    def statistics(
        self,
        mask: Path,
        *,
        name: str,
        image: VolumeSource | None = None,
        image_name: str = "",
        num_classes: int | None = None,
    ) -> dict[str, Any]:
        """Measure an uploaded label mask (NIfTI, or a DICOM SEG) and the image under it (NIfTI or a DICOM series)
        without running the model.

        The classes are named after this model's card when the mask's labels fit it (and `num_classes`, if given,
        is the card's count), else class_0, class_1, ...

        Raises:
            InvalidVolumeError: the mask is not a label mask, has more than MAX_STATS_CLASSES classes, the image
                lies on another grid, or `num_classes` does not exceed the highest label.
        """
        limits = self.limits
        labels_volume = load_mask(mask, max_voxels=limits.max_voxels,
                                  max_decompressed_bytes=limits.max_decompressed_bytes, name=name)  # fmt: skip
        card = self.segmenter.card
        read = label_masks(
            [(name, labels_volume.data)], option="num_classes", num_classes=num_classes, names=card.class_names()
        )
        if read.num_classes > MAX_STATS_CLASSES:
            raise InvalidVolumeError(
                f"{name}: {read.num_classes} classes (labels 0 .. {read.num_classes - 1}) are more than the "
                f"{MAX_STATS_CLASSES} measured per request"
            )
        intensities = None
        if image is not None:
            under = self._load(image, image_name or None)
            if not same_grid(under, labels_volume):
                raise InvalidVolumeError(
                    f"image {under.shape} and mask {labels_volume.shape} are not on the same voxel grid (shape and "
                    "affine): send as 'image' the volume the mask was made from"
                )
            intensities = under.data
        measured = mask_statistics(
            read.labels[0],
            labels_volume.affine,
            num_classes=read.num_classes,
            class_names=read.names,
            image=intensities,
        )
        return {"mask": name, "image": (image_name or under.name) if image is not None else None, **measured}

    def _load(self, path: VolumeSource, name: str | None) -> Volume:
        return load_volume(
            path,
            max_voxels=self.limits.max_voxels,
            max_decompressed_bytes=self.limits.max_decompressed_bytes,
            name=name,
        )

    def predict(
        self, path: VolumeSource, *, name: str | None, options: PredictOptions, progress: Progress | None = None
    ) -> Prediction:
        """Load and segment one upload within the limits; call inside `slots.run` so the slots hold.

        Args:
            path: a .nii/.nii.gz file, a DICOM .zip or file, or DICOM files the server wrote (never a client-chosen
                path).
            name: display name for the summary and the output file names (None: the DICOM series names itself).
        """
        return self.segmenter.predict(
            path,
            name=name,
            series=options.series,
            tta=options.tta,
            mode=options.mode,
            threshold=options.threshold,
            probabilities=options.probabilities,
            progress=progress,
        )


def _apply_card_overrides(segmenter: Segmenter, settings: Settings) -> None:
    if not settings.overrides_clip_percentiles and settings.pad_multiple is None:
        return
    card = segmenter.card.with_overrides(
        clip_percentiles=settings.clip_percentiles if settings.overrides_clip_percentiles else "card",
        pad_to_multiple=settings.pad_multiple,
    )
    model = segmenter.model
    try:
        card.check_network(model.num_classes, model.in_channels, model.pad_multiple)
    except CardError as e:
        raise SettingsConflictError(f"UNET3D_PAD_MULTIPLE does not fit the model: {e}") from e
    segmenter.card = card
    logger.info(
        "card overrides applied: clip_percentiles=%s pad_to_multiple=%s",
        card.input.clip_percentiles,
        card.input.pad_to_multiple,
    )
