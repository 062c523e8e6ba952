"""Response models: they document every field of the HTTP contract in /openapi.json (see DESIGN.md "HTTP")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelRef(BaseModel):
    """Which weights answered."""

    id: str = Field(description="Hub repo id or local path of the model")
    revision: str = Field(description='resolved commit sha for Hub models, "local" for local files')


class Health(BaseModel):
    """Liveness and readiness in one answer."""

    status: Literal["ok"] = "ok"
    model_loaded: bool
    device: str = Field(description='where inference runs, e.g. "cpu" or "cuda:0"')
    model: ModelRef


class ClassEntry(BaseModel):
    """One output class of the model card."""

    model_config = ConfigDict(extra="allow")

    index: int
    name: str
    color: str = Field(description="display colour, #rrggbb")


class ModelInfo(BaseModel):
    """The model card (model.yaml, every field kept) plus the identity of the loaded weights."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: str
    classes: list[ClassEntry]
    id: str
    revision: str
    sha256: str = Field(description="SHA-256 of model.safetensors")
    device: str


class ClassVolume(BaseModel):
    """Size of one class in the predicted mask."""

    index: int
    name: str
    voxels: int
    volume_ml: float = Field(description="voxels × voxel volume, in millilitres")


class Timings(BaseModel):
    """Milliseconds per stage; `encode` is 0 unless the mask was written (return_binary=true)."""

    load: float
    preprocess: float
    infer: float
    postprocess: float
    encode: float


class PredictionSummary(BaseModel):
    """The JSON answer of POST /v1/predict (also the `summary` output of the UI's /segment endpoint)."""

    filename: str = Field(description="the uploaded file's name (display only)")
    input_shape: list[int] = Field(description="shape stored in the input file, e.g. [197, 233, 189]")
    padded_shape: list[int] = Field(description="shape the network saw after cropping/resampling and padding")
    spacing_mm: list[float] = Field(description="voxel size along I, J, K in mm")
    orientation: str = Field(description='axis codes of the voxel axes, e.g. "RAS"')
    qform_code: int
    sform_code: int
    runtime_ms: float = Field(description="sum of timings_ms")
    device: str
    mode: str = Field(description='inference mode that ran: "whole" or "sliding"')
    threshold_used: float | None = Field(description="binary threshold applied; null for multi-class models")
    class_histogram: dict[str, int] = Field(description="voxels per class, keyed by class index as a string")
    classes: list[ClassVolume] = Field(description="one entry per class, background included")
    model: ModelRef
    timings_ms: Timings


class ErrorDetail(BaseModel):
    """Every error answer: what is wrong and what to do."""

    detail: str
