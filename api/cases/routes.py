"""The review API: /v1/cases (worklist, cases, verdicts, mask revisions, files) and /v1/reviews.csv."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from ..deps import ServiceDep, SettingsDep
from ..tempfiles import work_folder
from ..uploads import receive_uploads
from .access import CallerDep, acting_name, require_case_access
from .export import reviews_csv
from .http import CasesDep, errors, expected_version, with_etag
from .schemas import CaseDetail, CasePage, ReviewRequest, SortKey, Status
from .service import Provenance
from .store import CaseQuery

router = APIRouter(prefix="/v1", tags=["cases"], dependencies=[Depends(require_case_access)])

IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", description='the ETag of the case as you loaded it, e.g. "12.3" (required)'),
]
CaseId = Annotated[int, PathParam(ge=1, le=2**62, description="the case id")]


def _multipart(required: list[str], **fields: str) -> dict[str, Any]:
    properties = {name: {"type": "string", "format": "binary", "description": text} for name, text in fields.items()}
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


_NIFTI: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        "description": "the file",
    }
}


@router.get("/cases", response_model=CasePage, responses=errors(401, 422, 503))
def list_cases(
    cases: CasesDep,
    status: Annotated[Status | None, Query(description="only cases with this status")] = None,
    reviewer: Annotated[str | None, Query(max_length=100, description="only cases this reviewer judged last")] = None,
    sort: Annotated[SortKey, Query(description="order: id, name, updated, status or qc; '-' first for descending")] = (
        "id"
    ),
    limit: Annotated[int, Query(ge=1, le=500, description="cases per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9, description="matching cases to skip (next_offset of a page)")] = 0,
) -> CasePage:
    """The worklist: status, QC warnings, class volumes, reviewer and last change of each case, a page at a time.

    `?status=unreviewed&limit=1` is the next case to review.
    """
    query = CaseQuery(status=status, reviewer=reviewer, sort=sort, limit=limit, offset=offset)
    return cases.store.list_cases(query)


@router.post(
    "/cases",
    status_code=201,
    response_model=CaseDetail,
    responses=errors(400, 401, 403, 408, 409, 413, 415, 422, 429, 503, 507),
    openapi_extra=_multipart(
        ["volume"],
        volume="the scan (.nii or .nii.gz)",
        mask="optional: a label mask on the volume's grid; without one the served model segments the volume",
    ),
)
async def create_case(
    request: Request,
    response: Response,
    caller: CallerDep,
    cases: CasesDep,
    service: ServiceDep,
    settings: SettingsDep,
    name: Annotated[str | None, Query(max_length=200, description="unique case name (default: the file's stem)")] = (
        None
    ),
    author: Annotated[str | None, Query(max_length=100, description="who made an uploaded mask")] = None,
) -> CaseDetail:
    """Create a case from a volume (multipart `volume`) and either a mask (`mask`) or the model's prediction."""
    with work_folder("case") as work:
        uploads = await receive_uploads(
            request, Path(work), max_bytes=settings.max_upload_bytes, required=("volume",), optional=("mask",)
        )
        for upload in uploads.values():
            await anyio.to_thread.run_sync(service.check, upload.path)
        volume, mask = uploads["volume"], uploads.get("mask")
        with service.slots.admit():  # once the upload is complete and valid: a client still sending holds none
            if mask is None:
                prediction = await service.slots.run_async(
                    partial(service.predict, volume.path, name=volume.filename, options=service.options())
                )
                job = partial(
                    cases.create_from_prediction, volume.path, prediction, name=name, summary=prediction.summary()
                )
            else:
                who = acting_name(caller, author, role="author") if (author or caller.user) else "upload"
                job = partial(
                    cases.create_from_mask, volume.path, volume.filename, mask.path, mask.filename, name=name,
                    card_names=[c.name for c in service.segmenter.card.classes], provenance=Provenance(author=who),
                )  # fmt: skip
            case = await anyio.to_thread.run_sync(job)
    response.headers["Location"] = f"/v1/cases/{case.id}"
    return with_etag(response, case)


@router.get("/cases/{case_id}", response_model=CaseDetail, responses=errors(401, 404, 422, 503))
def get_case(case_id: CaseId, response: Response, cases: CasesDep) -> CaseDetail:
    """One case with every mask revision and verdict; the ETag header is what If-Match must send."""
    return with_etag(response, cases.store.get_case(case_id))


@router.put(
    "/cases/{case_id}/review",
    response_model=CaseDetail,
    responses=errors(400, 401, 403, 404, 409, 412, 422, 428, 503, e400="the body is not valid JSON"),
)
def review_case(
    case_id: CaseId,
    body: ReviewRequest,
    response: Response,
    caller: CallerDep,
    cases: CasesDep,
    if_match: IfMatch = None,
) -> CaseDetail:
    """Record a verdict (kept in the history; the latest is the case's status). Requires If-Match."""
    version = expected_version(if_match, case_id)
    reviewer = acting_name(caller, body.reviewer)
    case = cases.record_review(
        case_id, version, verdict=body.verdict, score=body.score, note=body.note, reviewer=reviewer
    )
    return with_etag(response, case)


@router.post(
    "/cases/{case_id}/masks",
    status_code=201,
    response_model=CaseDetail,
    responses=errors(400, 401, 403, 404, 408, 409, 412, 413, 415, 422, 428, 429, 503, 507),
    openapi_extra=_multipart(["mask"], mask="the corrected label mask (.nii or .nii.gz) on the case's grid"),
)
async def add_mask(
    case_id: CaseId,
    request: Request,
    response: Response,
    caller: CallerDep,
    cases: CasesDep,
    settings: SettingsDep,
    if_match: IfMatch = None,
    author: Annotated[str | None, Query(max_length=100, description="who made the correction (see reviewer)")] = None,
) -> CaseDetail:
    """Save a corrected mask as the case's next revision (its parent: the latest). Requires If-Match."""
    version = expected_version(if_match, case_id)
    who = acting_name(caller, author, role="author")
    with work_folder("case") as work:
        uploads = await receive_uploads(request, Path(work), max_bytes=settings.max_upload_bytes, required=("mask",))
        mask = uploads["mask"]
        number = await anyio.to_thread.run_sync(
            partial(cases.add_revision, case_id, version, mask.path, mask.filename, who)
        )
    case = await anyio.to_thread.run_sync(cases.store.get_case, case_id)
    response.headers["Location"] = f"/v1/cases/{case_id}/masks/{number}"
    return with_etag(response, case)


@router.get(
    "/cases/{case_id}/masks/{revision}", response_class=FileResponse, responses={**_NIFTI, **errors(401, 404, 422, 503)}
)
def download_mask(
    case_id: CaseId,
    revision: Annotated[
        int, PathParam(ge=0, le=2**31, description="the revision number (0: the prediction or imported mask)")
    ],
    cases: CasesDep,
) -> FileResponse:
    """A mask revision as .nii.gz, on the case volume's exact header (shape, affine, qform/sform and codes)."""
    case = cases.store.get_case(case_id)
    path = cases.mask_path(case, revision)
    return FileResponse(path, media_type="application/gzip", filename=f"{_safe(case.name)}_r{revision}_mask.nii.gz")


@router.get("/cases/{case_id}/volume", response_class=FileResponse, responses={**_NIFTI, **errors(401, 404, 422, 503)})
def download_volume(case_id: CaseId, cases: CasesDep) -> FileResponse:
    """The case's volume, byte for byte as it was uploaded or imported."""
    case = cases.store.get_case(case_id)
    path = cases.volume_path(case)
    gzipped = path.name.endswith(".gz")
    media, suffix = ("application/gzip", ".nii.gz") if gzipped else ("application/octet-stream", ".nii")
    return FileResponse(path, media_type=media, filename=f"{_safe(case.name)}{suffix}")


@router.get(
    "/reviews.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "the CSV"},
               **errors(401, 422, 503)},
)  # fmt: skip
def export_reviews(
    cases: CasesDep,
    history: Annotated[bool, Query(description="every verdict instead of one row per case with its latest")] = False,
) -> Response:
    """The review results as CSV: one row per case with its latest verdict, or with `history=true` every verdict."""
    text = reviews_csv(cases.store, history=history)
    name = "reviews-history.csv" if history else "reviews.csv"
    return Response(
        text, media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


def _safe(name: str) -> str:
    """A case name reduced to what every client takes in a Content-Disposition file name."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name) or "case"
