"""Prediction: the mask on the input grid plus the summary every front-end (CLI, HTTP, UI) reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .card import ModelCard
from .dicom.series import dicom_reference
from .hub import ModelSource
from .io import Volume, save_mask, save_probabilities
from .qc import QC

STAGES = ("load", "preprocess", "infer", "postprocess", "encode")


@dataclass
class Prediction:
    """The result of `Segmenter.predict`.

    Attributes:
        mask: `(I, J, K)` uint8 class indices on the input's voxel grid.
        volume: the input volume (geometry reference for saving).
        card: the model card (class names and colours).
        source: the model that ran (id, revision, weights sha256).
        device: the device it ran on (an out-of-memory retry may have moved it to the CPU).
        probabilities: `(C, I, J, K)` float32, only when requested.
        mode: the inference mode that ran ("whole" or "sliding").
        tta: whether test-time augmentation (flips, averaged) ran.
        network_shape: the padded shape the network saw (after cropping/resampling).
        threshold_used: the binary threshold applied, None for argmax models.
        timings_ms: milliseconds per stage (load, preprocess, infer, postprocess, encode).
        qc: how far the prediction can be trusted (`unet3d.qc`); None only for a Prediction built by hand.
    """

    mask: np.ndarray
    volume: Volume
    card: ModelCard
    source: ModelSource
    device: str
    mode: str
    network_shape: tuple[int, int, int]
    threshold_used: float | None = None
    probabilities: np.ndarray | None = None
    tta: bool = False
    timings_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    qc: QC | None = None

    def __repr__(self) -> str:  # the dataclass default would print the mask and the whole input volume
        classes = ", ".join(f"{c.name}: {n}" for c, n in zip(self.card.classes, self.class_voxels(), strict=True))
        return (
            f"Prediction({self.volume.name!r}, mask {self.volume.shape} uint8 ({classes} voxels), mode={self.mode}, "
            f"device={self.device}, model={self.source.id}@{self.source.revision})"
        )

    def class_voxels(self) -> list[int]:
        """Voxels per class, background first, in class index order."""
        # One comparison per class: np.bincount would first convert the whole uint8 mask to int64.
        counts = [int(np.count_nonzero(self.mask == c)) for c in range(1, self.card.num_classes)]
        return [self.mask.size - sum(counts), *counts]

    def border_classes(self) -> set[int]:
        """The classes that reach an outermost slice of the input's field of view (on any of its six faces)."""
        mask = self.mask
        faces = (mask[0], mask[-1], mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1])
        return {int(c) for c in np.unique(np.concatenate([face.ravel() for face in faces]))}

    def summary(self) -> dict[str, Any]:
        """JSON-able summary: the fields of `POST /v1/predict` (see DESIGN.md)."""
        voxels = self.class_voxels()
        at_border = self.border_classes()
        voxel_ml = self.volume.voxel_volume_ml
        geometry = self.volume.geometry()
        timings = {stage: round(self.timings_ms.get(stage, 0.0), 3) for stage in STAGES}
        return {
            "filename": self.volume.name,
            "input_shape": geometry["input_shape"],
            "padded_shape": list(self.network_shape),
            "spacing_mm": geometry["spacing_mm"],
            "orientation": geometry["orientation"],
            "qform_code": geometry["qform_code"],
            "sform_code": geometry["sform_code"],
            "runtime_ms": round(sum(timings.values()), 3),
            "device": self.device,
            "mode": self.mode,
            "tta": self.tta,
            "threshold_used": self.threshold_used,
            "class_histogram": {str(i): n for i, n in enumerate(voxels)},
            "classes": [
                {
                    "index": c.index,
                    "name": c.name,
                    "voxels": voxels[c.index],
                    "volume_ml": round(voxels[c.index] * voxel_ml, 6),
                    "touches_border": c.index in at_border if voxels[c.index] else None,
                }
                for c in self.card.classes
            ],
            "model": {"id": self.source.id, "revision": self.source.revision},
            "timings_ms": timings,
            "source": self.volume.source.as_dict(),  # what was read (NIfTI, or which DICOM series); never PHI
            "qc": self.qc.as_dict() if self.qc is not None else {"score": None, "warnings": []},
        }

    def save(self, path: str | Path) -> Path:
        """Write the mask (uint8, the input's exact geometry) to a .nii/.nii.gz path or into a folder (as
        `<stem>_mask.nii.gz`); returns the path written."""
        started = time.perf_counter()
        written = save_mask(self.mask, self.volume, path)
        self.timings_ms["encode"] = (time.perf_counter() - started) * 1000.0
        return written

    def save_dicom_seg(self, path: str | Path) -> Path:
        """Write the mask as a DICOM Segmentation of the series the input was read from (see docs/dicom.md): one
        segment per non-background class, named and coloured as in the model card, the model identified.

        Args:
            path: a .dcm file, or an existing folder (then `<folder>/<stem>_seg.dcm`).

        Returns:
            The path written.

        Raises:
            UnsupportedFormatError: the input was not a DICOM series (there are no images to reference).
        """
        dicom_reference(self.volume)  # refuse before highdicom is imported (~0.6 s)
        from .dicom.seg import write_dicom_seg

        started = time.perf_counter()
        written = write_dicom_seg(self.mask, self.volume, self.card, self.source, path)
        self.timings_ms["encode"] = (time.perf_counter() - started) * 1000.0
        return written

    def save_probabilities(self, path: str | Path) -> Path:
        """Write `(I, J, K, C)` float32 probabilities; requires `predict(..., probabilities=True)`."""
        if self.probabilities is None:
            raise ValueError("no probabilities: call predict(..., probabilities=True)")
        return save_probabilities(self.probabilities, self.volume, path)
