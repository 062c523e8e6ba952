"""DICOM in, DICOM SEG out: a series (folder, .zip or files) read as a `Volume`; a mask written as a DICOM SEG.

`load_dicom` needs pydicom only; `write_dicom_seg` / `read_dicom_seg` import highdicom (~0.6 s) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..formats import looks_like_dicom
from .reader import DicomGrid, DicomSource, check_dicom, inspect_dicom, load_dicom
from .series import DicomReference

if TYPE_CHECKING:
    from .seg import read_dicom_seg, write_dicom_seg

__all__ = [
    "DicomGrid",
    "DicomReference",
    "DicomSource",
    "check_dicom",
    "inspect_dicom",
    "load_dicom",
    "looks_like_dicom",
    "read_dicom_seg",
    "write_dicom_seg",
]


def __getattr__(name: str) -> Any:
    if name in ("read_dicom_seg", "write_dicom_seg"):
        from . import seg

        return getattr(seg, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
