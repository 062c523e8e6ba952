"""The files the browser viewer reads and writes, served inside the UI mount behind the UI's own login.

`GET /ui/case-files/{id}/volume` and `GET /ui/case-files/{id}/masks/{revision}` hand NiiVue a case's volume and a mask
revision; `POST /ui/case-files/{id}/masks` saves a drawn correction as the next revision; `GET
/ui/case-files/reviews.csv` is the Worklist's export (as `GET /v1/reviews.csv`). They answer whoever may use
the page: with a login (users file or API key) only a browser signed in to it (Gradio's session cookie, checked by
Gradio's own code), without one anyone who can reach the server, exactly as `/v1/cases` does without a key. A save
needs `If-Match` (the case's ETag): it keeps two reviewers from overwriting each other, and a header that a form on
another site cannot send keeps cross-site requests out. The author is the signed-in user, else the `author` given.
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response

from unet3d.errors import Unet3dError

from ..cases.http import expected_version
from ..cases.records import etag
from ..cases.routes import CaseId, download_mask, download_volume, export_reviews
from ..cases.service import CaseService
from ..errors import ServiceError, StorageUnavailableError, error_response
from ..settings import get_settings
from ..uploads import receive_uploads
from .identity import reviewer_name

PREFIX = "/case-files"
# A revision's bytes never change, nor a case's volume: the browser may keep them (privately) for good.
IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable"}
SIGN_IN = "sign in to the review UI first: reload the page"
Revision = Annotated[int, PathParam(ge=0, le=2**31)]


def volume_url(case_id: int) -> str:
    """The viewer's address of a case's volume, relative to the page (/ui/)."""
    return f"{PREFIX.lstrip('/')}/{case_id}/volume"


def mask_url(case_id: int, revision: int) -> str:
    """The viewer's address of a mask revision, relative to the page."""
    return f"{PREFIX.lstrip('/')}/{case_id}/masks/{revision}"


def install_case_files(gradio_app: Any, get_cases: Callable[[], CaseService | None]) -> None:
    """Add the case-file routes to the mounted Gradio app (a FastAPI app), behind its login."""
    signed_in = _signed_in_user(gradio_app)

    def cases() -> CaseService:
        service = get_cases()
        if service is None:
            raise StorageUnavailableError("the review database is not open yet: retry in a few seconds")
        return service

    def volume(case_id: CaseId, user: Any = Depends(signed_in)) -> Response:
        return _answer(lambda: _volume_file(cases(), case_id))

    def mask(case_id: CaseId, revision: Revision, user: Any = Depends(signed_in)) -> Response:
        return _answer(lambda: _mask_file(cases(), case_id, revision))

    async def save(
        case_id: CaseId, request: Request, author: str | None = None, user: Any = Depends(signed_in)
    ) -> Response:
        try:
            return await _save_mask(cases(), case_id, request, author, user)
        except (ServiceError, Unet3dError) as e:
            return error_response(e)

    def export(history: bool = False, user: Any = Depends(signed_in)) -> Response:
        return _answer(lambda: export_reviews(cases(), history))

    for path, endpoint, methods in (
        (f"{PREFIX}/reviews.csv", export, ["GET"]),
        (f"{PREFIX}/{{case_id}}/volume", volume, ["GET"]),
        (f"{PREFIX}/{{case_id}}/masks/{{revision}}", mask, ["GET"]),
        (f"{PREFIX}/{{case_id}}/masks", save, ["POST"]),
    ):
        gradio_app.add_api_route(path, endpoint, methods=methods, include_in_schema=False)


def _signed_in_user(gradio_app: Any) -> Callable[[Request], Awaitable[str | None]]:
    """A dependency: the user signed in to the UI (None without a login), refusing a request that is not signed in.

    It reads the login exactly as Gradio's own `/gradio_api/user` and `login_check` do (gradio/routes.py,
    `get_current_user`): the app's auth dependency if it has one, else its session token cookie.
    """

    async def signed_in(request: Request) -> str | None:
        if gradio_app.auth_dependency is not None:
            user = gradio_app.auth_dependency(request)
            user = await user if inspect.isawaitable(user) else user
        else:
            cookie = gradio_app.cookie_id
            token = request.cookies.get(f"access-token-{cookie}") or request.cookies.get(
                f"access-token-unsecure-{cookie}"
            )
            user = gradio_app.tokens.get(token)
        if user is None and (gradio_app.auth is not None or gradio_app.auth_dependency is not None):
            raise HTTPException(status_code=401, detail=SIGN_IN)
        return user

    return signed_in


def _answer(make: Callable[[], Response]) -> Response:
    try:
        return make()
    except (ServiceError, Unet3dError) as e:
        return error_response(e)


def _volume_file(cases: CaseService, case_id: int) -> Response:
    answer = download_volume(case_id, cases)
    answer.headers.update(IMMUTABLE)
    return answer


def _mask_file(cases: CaseService, case_id: int, revision: int) -> Response:
    answer = download_mask(case_id, revision, cases)
    answer.headers.update(IMMUTABLE)
    return answer


async def _save_mask(
    cases: CaseService, case_id: int, request: Request, author: str | None, user: str | None
) -> JSONResponse:
    version = expected_version(request.headers.get("if-match"), case_id)
    who = reviewer_name(user, None, author)
    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix="unet3d-ui-mask-") as work:
        uploads = await receive_uploads(request, Path(work), max_bytes=settings.max_upload_bytes, required=("mask",))
        drawn = uploads["mask"]
        number = await anyio.to_thread.run_sync(
            partial(cases.add_revision, case_id, version, drawn.path, drawn.filename, who)
        )
    case = await anyio.to_thread.run_sync(cases.store.get_case, case_id)
    headers = {"ETag": etag(case.id, case.version), "Location": mask_url(case_id, number)}
    return JSONResponse(case.model_dump(mode="json"), status_code=201, headers=headers)
