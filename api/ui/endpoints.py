"""The names and descriptions of the UI's gradio_client endpoints that segment (gradio_client's view_api() and the
page's "Use via API" show them); `/review` has its own beside its checks, in `reviewapi`."""

from __future__ import annotations

from typing import Any

SEGMENT_API: dict[str, Any] = {
    "api_name": "segment",
    "api_description": "Segment a NIfTI volume (.nii / .nii.gz) or a zipped DICOM series (.zip): returns the mask "
    "(.nii.gz, uint8, on the input's voxel grid) and the summary JSON (the fields of POST /v1/predict).",
}
SEGMENT_DICOM_API: dict[str, Any] = {
    "api_name": "segment_dicom",
    "api_description": "Segment a zipped DICOM series (.zip): returns the mask as a DICOM SEG (.dcm, one segment per "
    "class, referencing the series), the mask (.nii.gz) and the summary JSON.",
}
SEGMENT_WITH_OPTIONS_API: dict[str, Any] = {
    "api_name": "segment_with_options",
    "api_description": "Segment a NIfTI volume with options: tta (test-time augmentation over flips, about 4× "
    "slower) and probabilities (also return the class probabilities, float32 (I, J, K, C) .nii.gz on the input's "
    "grid). Returns the mask, the summary JSON and the probabilities file (None unless asked for).",
}
