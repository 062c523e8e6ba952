"""HTTP plumbing of /v1/cases: the service dependency, If-Match, ETag headers and the documented error answers."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Depends, Request, Response

from ..errors import PreconditionFailedError, PreconditionRequiredError, StorageUnavailableError
from ..schemas import ErrorDetail
from .records import etag
from .schemas import CaseDetail
from .service import CaseService

_ETAG = re.compile(r'^"(\d{1,18})\.(\d{1,18})"$')

ERROR_TEXT = {
    400: "unreadable or corrupt file",
    401: "not signed in: a user of UNET3D_USERS_FILE (basic or bearer auth), or the API key when there is no "
    "users file and UNET3D_API_KEY is set",
    403: "signed in as someone else than the name in the request",
    404: "no such case or mask revision",
    408: "the upload stalled or arrived too slowly (UNET3D_UPLOAD_STALL_S, UNET3D_UPLOAD_MIN_RATE_KIB_S)",
    409: "the change contradicts what is stored, e.g. a case name that is taken",
    412: "If-Match names an old version: someone changed the case since you loaded it; reload and retry",
    413: "too large: bytes, decompressed bytes or voxels",
    415: "not a NIfTI file (.nii / .nii.gz)",
    422: "an invalid parameter, or a mask that is not a label mask on the case's grid",
    428: "If-Match is missing: send the case's ETag",
    429: "this client sends too fast or holds too many uploads (see Retry-After)",
    503: "busy, receiving too many uploads or restarting (see Retry-After), model not loaded, or the review database "
    "unavailable",
    507: "the server's temp storage is full (see Retry-After); nothing was written",
}


def errors(*statuses: int, **texts: str) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route; `texts` (`e400="..."`) replace the usual descriptions."""
    return {
        status: {"model": ErrorDetail, "description": texts.get(f"e{status}", ERROR_TEXT[status])}
        for status in statuses
    }


def get_cases(request: Request) -> CaseService:
    """The case service the lifespan opened.

    Raises:
        StorageUnavailableError: it is not (or no longer) open.
    """
    cases = getattr(request.app.state, "cases", None)
    if cases is None:
        raise StorageUnavailableError("the review database is not open yet: retry in a few seconds")
    return cases


CasesDep = Annotated[CaseService, Depends(get_cases)]


def expected_version(if_match: str | None, case_id: int) -> int:
    """The case version an If-Match header names.

    Raises:
        PreconditionRequiredError: no If-Match, or `*` (which would overwrite whatever changed).
        PreconditionFailedError: the value is not an ETag of this case.
    """
    value = (if_match or "").strip()
    if not value or value == "*":
        raise PreconditionRequiredError(
            f"send If-Match with the ETag of case {case_id} you are changing (the ETag header of "
            f"GET /v1/cases/{case_id}), so that a change made meanwhile by someone else is not overwritten"
        )
    match = _ETAG.match(value)
    if match is None or int(match.group(1)) != case_id:
        raise PreconditionFailedError(
            f"If-Match {value[:60]} is not an ETag of case {case_id}: reload the case (GET /v1/cases/{case_id}) "
            "and send its ETag"
        )
    return int(match.group(2))


def with_etag(response: Response, case: CaseDetail) -> CaseDetail:
    """Set the ETag header of `response` to the case's and return the case."""
    response.headers["ETag"] = etag(case.id, case.version)
    return case
