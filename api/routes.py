"""HTTP routes: /health, /ready, /metrics, /favicon.ico and the /v1 API (model card, predict, stats)."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from unet3d.io import stem_of
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

router = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["v1"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorDetail, "description": description}
    for status, description in {
        400: "unreadable or corrupt file",
        401: "missing or wrong API key (only when UNET3D_API_KEY is set)",
        408: "the upload stalled or arrived too slowly (UNET3D_UPLOAD_STALL_S, UNET3D_UPLOAD_MIN_RATE_KIB_S)",
        413: "too large: bytes, decompressed bytes or voxels",
        415: "not a NIfTI file (.nii / .nii.gz)",
        422: "wrong dimensionality or data type, or an invalid parameter",
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


_UPLOAD_BODY = _multipart_body(["file"], file="a .nii or .nii.gz volume")
_STATS_BODY = _multipart_body(
    ["mask"],
    mask="an integer label mask (.nii or .nii.gz), e.g. what /v1/predict returned",
    image="optional: the volume on the mask's grid, for intensities per class",
)
_PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        "description": "the summary JSON, or the mask (.nii.gz) with return_binary=true",
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
) -> PredictionSummary | Response:
    """Segment one uploaded volume (multipart field `file`); the mask is on the input's exact voxel grid.

    An inference slot is taken once the upload is complete and valid: a client still sending holds none."""
    options = service.options(tta=tta, mode=mode, threshold=threshold)
    with work_folder("request") as work:
        upload = await receive_upload(request, Path(work), max_bytes=settings.max_upload_bytes)
        await anyio.to_thread.run_sync(service.check, upload.path)
        with service.slots.admit():
            if not return_binary:
                summary = await service.slots.run_async(partial(_summarise, service, upload, options))
                return PredictionSummary.model_validate(summary)
            mask = await service.slots.run_async(partial(_encode, service, upload, options))
    return Response(mask, media_type="application/gzip", headers={"Content-Disposition": _attachment(upload.filename)})


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
    """Measure an existing mask (multipart field `mask`, optional `image` on its grid) without running the model.

    Per class: voxels, volume (mL), centroid (scanner mm), bounding box, whether it reaches the edge of the scan,
    and with an image the intensities under it. The classes take the served model's names when the labels fit it.
    """
    with work_folder("request") as work:
        uploads = await receive_uploads(
            request, Path(work), max_bytes=settings.max_upload_bytes, required=("mask",), optional=("image",)
        )
        for upload in uploads.values():
            await anyio.to_thread.run_sync(service.check, upload.path)
        mask, image = uploads["mask"], uploads.get("image")
        job = partial(
            service.statistics,
            mask.path,
            name=mask.filename,
            image=image.path if image else None,
            image_name=image.filename if image else "",
            num_classes=num_classes,
        )
        with service.slots.admit():
            return MaskStatistics.model_validate(await anyio.to_thread.run_sync(job))


def _attachment(filename: str) -> str:
    """`attachment` named `<stem>_mask.nii.gz`: an ASCII name for every client, and the exact (UTF-8) name as
    RFC 6266's `filename*` where they differ (browsers prefer it; curl -OJ takes the ASCII one)."""
    name = f"{stem_of(filename)}_mask.nii.gz"
    ascii_name = _UNSAFE_HEADER_CHARS.sub("_", name)
    if ascii_name == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _summarise(service: SegmentationService, upload: Upload, options: PredictOptions) -> dict[str, Any]:
    return service.predict(upload.path, name=upload.filename, options=options).summary()


def _encode(service: SegmentationService, upload: Upload, options: PredictOptions) -> bytes:
    # No summary here: counting voxels per class costs ~0.15 s on a 1 mm brain, and nobody reads it.
    prediction = service.predict(upload.path, name=upload.filename, options=options)
    return prediction.save(upload.path.with_name("mask.nii.gz")).read_bytes()
