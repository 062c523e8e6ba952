"""HTTP routes: /health, /ready, /metrics, /favicon.ico and the /v1 API (model card, predict, stats)."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from unet3d.errors import ParameterError
from unet3d.options import Mode

from .deps import ServiceDep, SettingsDep, require_api_key
from .errors import ModelNotLoadedError, ShuttingDownError, StorageUnavailableError
from .limits import RESTART_RETRY_S
from .schemas import ErrorDetail, Health, MaskStatistics, ModelInfo, ModelRef, PredictionSummary, Readiness
from .service import PredictOptions, SegmentationService
from .tempfiles import work_folder
from .uploads import Upload, receive_upload, receive_uploads

FAVICON = Path(__file__).resolve().parent / "static" / "favicon.svg"
_UNSAFE_HEADER_CHARS = re.compile(r"[^A-Za-z0-9._-]")
OutputFormat = Literal["nifti", "dicom-seg"]

router = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["v1"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorDetail, "description": description}
    for status, description in {
        400: "unreadable or corrupt file",
        401: "missing or wrong API key (only when UNET3D_API_KEY is set)",
        408: "the upload stalled or arrived too slowly (UNET3D_UPLOAD_STALL_S, UNET3D_UPLOAD_MIN_RATE_KIB_S)",
        413: "too large: bytes, decompressed bytes, files or voxels",
        415: "not a NIfTI file (.nii / .nii.gz) nor a DICOM series, or format=dicom-seg for a NIfTI input",
        422: "wrong dimensionality or data type, an invalid parameter, or a DICOM upload that is not one series (the "
        "detail lists the series: choose one with ?series=UID)",
        429: "this client sends too fast or holds too many uploads (see Retry-After)",
        503: "busy, receiving too many uploads or restarting (see Retry-After), or model not loaded",
        507: "the server's temp storage is full (see Retry-After); nothing was written",
    }.items()
}
_UPLOAD_STATUSES = (400, 401, 408, 413, 415, 422, 429, 503, 507)


def _multipart_body(required: list[str], **fields: str) -> dict[str, Any]:
    """The OpenAPI request body of a multipart upload whose fields are files, each with its description."""
    properties = {name: {"type": "string", "format": "binary", "description": text} for name, text in fields.items()}
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


_UPLOAD_BODY = _multipart_body(
    ["file"],
    file="a .nii or .nii.gz volume, or a DICOM series: a .zip of it, or its files (.dcm) each as its own 'file' part "
    "(at most 5000)",
)
_STATS_BODY = _multipart_body(
    ["mask"],
    mask="an integer label mask (.nii or .nii.gz), e.g. what /v1/predict returned, or a DICOM SEG (.dcm)",
    image="optional: the volume on the mask's grid, for intensities per class (NIfTI, or the DICOM series as a .zip "
    "or .dcm parts)",
)
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/gzip": _BINARY, "application/dicom": _BINARY},
        "description": "the summary JSON; with return_binary=true the mask (.nii.gz, application/gzip), or with "
        "format=dicom-seg too the DICOM SEG (.dcm, application/dicom)",
    },
    **{status: _ERRORS[status] for status in _UPLOAD_STATUSES},
}


@router.get("/health", response_model=Health, tags=["service"])
async def health(request: Request) -> Health:
    """Liveness: answers at once, even while predictions run."""
    service: SegmentationService | None = getattr(request.app.state, "service", None)
    if service is None:
        return Health(model_loaded=False, device="none", model=ModelRef(id="", revision=""))
    source = service.segmenter.source
    return Health(
        model_loaded=True, device=str(service.segmenter.device), model=ModelRef(id=source.id, revision=source.revision)
    )


@router.get(
    "/ready",
    response_model=Readiness,
    tags=["service"],
    responses={503: {"model": ErrorDetail, "description": "not ready: loading, restarting or storage closed"}},
)
async def ready(request: Request) -> Readiness:
    """Readiness, for load balancers and Kubernetes' readinessProbe: 200 once the model is loaded and the review
    storage open, 503 during startup and from the moment a restart begins (SIGTERM). Liveness is /health."""
    state = request.app.state
    if state.lifecycle.draining:
        raise ShuttingDownError("the server is restarting: send new work elsewhere", RESTART_RETRY_S)
    if getattr(state, "service", None) is None:
        raise ModelNotLoadedError("the model is not loaded yet")
    if getattr(state, "cases", None) is None:
        raise StorageUnavailableError("the review storage is not open")
    return Readiness()


@router.get("/metrics", tags=["service"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of the service's metrics."""
    payload = generate_latest(request.app.state.metrics.registry)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
async def root(request: Request) -> RedirectResponse:
    """Visitors of the bare host (a Hugging Face Space opens at /) land on the review UI."""
    return RedirectResponse(f"{request.scope.get('root_path', '')}/ui/", status_code=307)


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    return Response(FAVICON.read_bytes(), media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


@v1.get("/model", response_model=ModelInfo, responses={401: _ERRORS[401], 503: _ERRORS[503]})
async def model_card(service: ServiceDep) -> dict[str, Any]:
    """The model card plus the id, revision and sha256 of the loaded weights."""
    return service.info()


@v1.post(
    "/predict",
    response_model=PredictionSummary,
    responses=_PREDICT_RESPONSES,
    openapi_extra=_UPLOAD_BODY,
)
async def predict(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    return_binary: Annotated[bool, Query(description="answer with the mask (.nii.gz) instead of JSON")] = False,
    threshold: Annotated[float | None, Query(description="foreground cut-off in (0, 1), binary models")] = None,
    tta: Annotated[bool, Query(description="flip test-time augmentation (about 4× slower)")] = False,
    mode: Annotated[Mode, Query(description="whole pass, sliding window, or auto")] = "auto",
    output_format: Annotated[
        OutputFormat,
        Query(
            alias="format",
            description="with return_binary=true, the file returned: nifti (the mask, .nii.gz) or dicom-seg (a DICOM "
            "SEG of a DICOM input, .dcm)",
        ),
    ] = "nifti",
    series: Annotated[
        str | None,
        Query(max_length=64, description="DICOM: the SeriesInstanceUID to read when the upload holds several series"),
    ] = None,
) -> PredictionSummary | Response:
    """Segment one uploaded volume (multipart field `file`: NIfTI, or a DICOM series as a .zip or .dcm parts); the
    mask is on the input's exact voxel grid, and can come back as a DICOM SEG of a DICOM input.

    An inference slot is taken once the upload is complete and valid: a client still sending holds none."""
    options = service.options(tta=tta, mode=mode, threshold=threshold, series=series)
    check_output_format(output_format, return_binary=return_binary)
    with work_folder("request") as work:
        upload = await receive_upload(request, Path(work), max_bytes=settings.max_upload_bytes, dicom=True)
        await anyio.to_thread.run_sync(partial(service.check, upload.source, dicom_seg=output_format == "dicom-seg"))
        with service.slots.admit():
            if not return_binary:
                summary = await service.slots.run_async(partial(_summarise, service, upload, options))
                return PredictionSummary.model_validate(summary)
            payload, name = await service.slots.run_async(partial(_encode, service, upload, options, output_format))
    media_type = "application/dicom" if output_format == "dicom-seg" else "application/gzip"
    return Response(payload, media_type=media_type, headers={"Content-Disposition": _attachment(name)})


@v1.post(
    "/stats",
    response_model=MaskStatistics,
    responses={status: _ERRORS[status] for status in _UPLOAD_STATUSES},
    openapi_extra=_STATS_BODY,
)
async def stats(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    num_classes: Annotated[
        int | None, Query(ge=2, description="classes including background (default: the highest label + 1)")
    ] = None,
) -> MaskStatistics:
    """Measure an existing mask (multipart field `mask`: NIfTI or a DICOM SEG; optional `image` on its grid: NIfTI or
    a DICOM series) without running the model.

    Per class: voxels, volume (mL), centroid (scanner mm), bounding box, whether it reaches the edge of the scan,
    and with an image the intensities under it. The classes take the served model's names when the labels fit it.
    """
    with work_folder("request") as work:
        uploads = await receive_uploads(request, Path(work), max_bytes=settings.max_upload_bytes, required=("mask",),
                                        optional=("image",), dicom=("mask", "image"))  # fmt: skip
        for upload in uploads.values():
            await anyio.to_thread.run_sync(service.check, upload.source)
        mask, image = uploads["mask"], uploads.get("image")
        job = partial(
            service.statistics,
            mask.path,
            name=mask.filename,
            image=image.source if image else None,
            image_name=(image.name or "") if image else "",
            num_classes=num_classes,
        )
        with service.slots.admit():
            return MaskStatistics.model_validate(await anyio.to_thread.run_sync(job))


def check_output_format(output_format: OutputFormat, *, return_binary: bool) -> None:
    """Refuse `format` without `return_binary=true` (it names the file returned; the JSON answer has no format)."""
    if output_format != "nifti" and not return_binary:
        raise ParameterError(
            f"format={output_format} chooses the file returned with return_binary=true: add return_binary=true, or "
            "leave format out for the JSON summary"
        )


def _attachment(name: str) -> str:
    """`attachment` named `name` (`<stem>_mask.nii.gz`, `<stem>_seg.dcm`): an ASCII name for every client, and the
    exact (UTF-8) name as RFC 6266's `filename*` where they differ (browsers prefer it; curl -OJ takes the ASCII one).
    """
    ascii_name = _UNSAFE_HEADER_CHARS.sub("_", name)
    if ascii_name == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _summarise(service: SegmentationService, upload: Upload, options: PredictOptions) -> dict[str, Any]:
    return service.predict(upload.source, name=upload.name, options=options).summary()


def _encode(
    service: SegmentationService, upload: Upload, options: PredictOptions, output_format: OutputFormat
) -> tuple[bytes, str]:
    """The file asked for and its download name; no summary here: counting voxels per class costs ~0.15 s on a 1 mm
    brain, and nobody reads it."""
    prediction = service.predict(upload.source, name=upload.name, options=options)
    work, stem = upload.path.parent, prediction.volume.stem
    if output_format == "dicom-seg":
        return prediction.save_dicom_seg(work / "mask.dcm").read_bytes(), f"{stem}_seg.dcm"
    return prediction.save(work / "mask.nii.gz").read_bytes(), f"{stem}_mask.nii.gz"
