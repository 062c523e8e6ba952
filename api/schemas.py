"""Response models: they document every field of the HTTP contract in /openapi.json (see DESIGN.md "HTTP")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelRef(BaseModel):
    """Which weights answered."""

    id: str = Field(description='Hub repo id or local path of the model ("" while no model is loaded)')
    revision: str = Field(description='resolved commit sha for Hub models, "local" for local files')


class Readiness(BaseModel):
    """Ready for traffic: the model is loaded, the review storage open, and no restart has begun."""

    status: Literal["ready"] = Field(default="ready", description='always "ready" (otherwise the answer is a 503)')


class Health(BaseModel):
    """Liveness (and whether the model is loaded; `GET /ready` is the readiness probe)."""

    status: Literal["ok"] = Field(default="ok", description='always "ok": the process answers (liveness)')
    model_loaded: bool = Field(
        description="true once the model is loaded and /v1/* can answer; false during startup or shutdown "
        "(GET /ready is the readiness probe)"
    )
    device: str = Field(description='where inference runs, e.g. "cpu" or "cuda:0"; "none" while no model is loaded')
    model: ModelRef = Field(description="the loaded weights")


class ClassEntry(BaseModel):
    """One output class of the model card."""

    model_config = ConfigDict(extra="allow")

    index: int = Field(description="the class's label value in the mask (0 = background)")
    name: str = Field(description='class name from model.yaml, e.g. "white matter"')
    color: str = Field(description="display colour, #rrggbb")


class ModelInfo(BaseModel):
    """The model card (model.yaml, every field kept) plus the identity of the loaded weights."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="model name from model.yaml")
    version: str = Field(description="model version from model.yaml")
    classes: list[ClassEntry] = Field(description="the output classes in label order, background included")
    id: str = Field(description="Hub repo id or local path of the model")
    revision: str = Field(description='resolved commit sha for Hub models, "local" for local files')
    sha256: str = Field(description="SHA-256 of model.safetensors")
    brain_mask_sha256: str | None = Field(
        default=None,
        description="SHA-256 of brain_mask/model.safetensors: a chained model's brain-extraction stage (null: none)",
    )
    device: str = Field(description='where inference runs, e.g. "cpu" or "cuda:0"')


class ClassVolume(BaseModel):
    """Size of one class in the predicted mask."""

    index: int = Field(description="the class's label value in the mask (0 = background)")
    name: str = Field(description="class name from model.yaml")
    voxels: int = Field(description="number of mask voxels with this label, on the input's voxel grid")
    volume_ml: float = Field(description="voxels × voxel volume, in millilitres")
    touches_border: bool | None = Field(
        description="true when the class reaches an outermost slice of the input: it may go on outside the scan, so "
        "its volume is a lower bound; null when the class is absent"
    )


class Timings(BaseModel):
    """Milliseconds per stage; `encode` is 0 unless the mask was written (return_binary=true)."""

    load: float = Field(description="reading and decoding the uploaded file, in ms")
    preprocess: float = Field(description="reorientation, intensity clipping, foreground crop and resampling, in ms")
    infer: float = Field(description="network passes (whole volume or sliding window, TTA flips) and labelling, in ms")
    postprocess: float = Field(
        description="mapping the mask back to the input's voxel grid, cleaning it and quality control, in ms"
    )
    encode: float = Field(description="writing the mask as .nii.gz, in ms; 0 when only the JSON was asked for")


class IgnoredSeries(BaseModel):
    """A series of a DICOM upload that was not read, and why."""

    uid: str = Field(description="its SeriesInstanceUID")
    description: str = Field(description='its SeriesDescription ("" when absent)')
    images: int = Field(description="DICOM objects (files) it holds")
    reason: str = Field(
        description='why it was left out, e.g. "localizer (ImageType LOCALIZER)", "not selected", '
        '"not an image: a structured report (SR)"'
    )


class InputSource(BaseModel):
    """What the input was: a NIfTI file, or which series of a DICOM upload was read. Never a patient's name, ID or
    birth date."""

    format: Literal["nifti", "dicom"] = Field(description='"nifti", or "dicom" for a DICOM series (folder, zip, files)')
    series_uid: str | None = Field(description="the DICOM SeriesInstanceUID read; null for NIfTI")
    modality: str | None = Field(description='the DICOM Modality, e.g. "MR" or "CT"; null for NIfTI')
    images: int | None = Field(
        description="DICOM objects read: one per slice, or one multi-frame object; null for NIfTI"
    )
    ignored_series: list[IgnoredSeries] = Field(
        description="the other series of the upload (localizers, reports, series not chosen) and why each was left "
        "out; empty for NIfTI"
    )


class QualityControl(BaseModel):
    """How far the prediction can be trusted (docs/http.md#quality-control lists the warnings)."""

    score: float | None = Field(
        description="in [0, 1]: 1 when nothing looked unusual, below 0.5 when there is at least one warning (the "
        "score of the worst check: intensities, structure, contrast, skull-stripping, orientation, cut-off, field of "
        "view, brain volume, uncertainty)"
    )
    warnings: list[str] = Field(
        description="plain-language warnings, each saying what looks wrong and what to do (e.g. that the model "
        "expects a skull-stripped scan); empty when nothing looked wrong"
    )


class PredictionSummary(BaseModel):
    """The JSON answer of POST /v1/predict (also the `summary` output of the UI's /segment endpoint)."""

    filename: str = Field(description="the uploaded file's name (display only)")
    input_shape: list[int] = Field(description="shape stored in the input file, e.g. [197, 233, 189]")
    padded_shape: list[int] = Field(
        description="the grid the network ran on (canonical axis order): after the foreground crop, resampling to "
        "the model's spacing and padding, e.g. [176, 208, 176] for a 197×233×189 input; the mask is on input_shape"
    )
    spacing_mm: list[float] = Field(description="voxel size along I, J, K in mm")
    orientation: str = Field(description='axis codes of the voxel axes, e.g. "RAS"')
    qform_code: int = Field(
        description="NIfTI qform_code of the input (0 unknown, 1 scanner, 2 aligned, 3 Talairach, 4 MNI); the mask "
        "keeps it"
    )
    sform_code: int = Field(description="NIfTI sform_code of the input (codes as for qform_code); the mask keeps it")
    runtime_ms: float = Field(description="sum of timings_ms")
    device: str = Field(
        description='where this prediction ran, e.g. "cpu" or "cuda:0" (after a CUDA out-of-memory fallback: "cpu")'
    )
    mode: str = Field(description='inference mode that ran: "whole" or "sliding"')
    tta: bool = Field(description="whether test-time augmentation (flips along each axis, averaged) ran")
    threshold_used: float | None = Field(description="binary threshold applied; null for multi-class models")
    class_histogram: dict[str, int] = Field(description="voxels per class, keyed by class index as a string")
    classes: list[ClassVolume] = Field(description="one entry per class, background included")
    model: ModelRef = Field(description="the weights that made this prediction")
    timings_ms: Timings = Field(description="time per stage, in ms")
    source: InputSource = Field(description="what was read: the format and, for DICOM, the series")
    qc: QualityControl = Field(description="quality control: a score and warnings on what looks wrong")


class Intensity(BaseModel):
    """Intensities of the image under one class."""

    mean: float = Field(description="mean intensity of the class's voxels")
    std: float = Field(description="standard deviation of the class's intensities")
    min: float = Field(description="lowest intensity under the class")
    median: float = Field(description="median intensity under the class")
    max: float = Field(description="highest intensity under the class")


class ClassMeasures(ClassVolume):
    """One class of a measured mask: its size as in a prediction's summary, and where it lies."""

    name: str = Field(description="the served model's class name when the mask's labels fit its card, else class_N")
    centroid_mm: list[float] | None = Field(
        description="mean voxel position in scanner coordinates (x, y, z) in mm; null when the class is absent"
    )
    bbox_ijk: list[list[int]] | None = Field(
        description="first and last voxel index along each array axis, [[i0, i1], [j0, j1], [k0, k1]], in the "
        "file's voxel order; null when the class is absent"
    )
    intensity: Intensity | None = Field(
        default=None, description="statistics of the image under the class; null without an image or class"
    )


class MaskStatistics(BaseModel):
    """The JSON answer of POST /v1/stats: measurements of an uploaded mask, no model run."""

    mask: str = Field(description="the uploaded mask's file name (display only)")
    image: str | None = Field(description="the uploaded image's file name, null when none was sent")
    shape: list[int] = Field(description="the mask's shape, e.g. [197, 233, 189]")
    voxel_volume_ml: float = Field(description="volume of one voxel in millilitres (from the affine)")
    classes: list[ClassMeasures] = Field(description="one entry per class 0 .. num_classes - 1, background included")
    foreground_volume_ml: float = Field(description="volume of every class but background, in millilitres")


class ErrorDetail(BaseModel):
    """Every error answer: what is wrong and what to do."""

    detail: str = Field(description="what is wrong and what to do, in one sentence")
