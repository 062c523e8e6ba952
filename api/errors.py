"""The service's own exceptions and the one place where any exception becomes an HTTP status.

Every error response is JSON `{"detail": "<what is wrong and what to do>"}`; unexpected exceptions are logged
with their traceback and answered with a generic 500 that leaks nothing.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from unet3d.errors import (
    AmbiguousSeriesError,
    InferenceError,
    InvalidVolumeError,
    ModelLoadError,
    ParameterError,
    Unet3dError,
    UnreadableVolumeError,
    UnsupportedFormatError,
    VolumeTooLargeError,
)

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base class of the errors the service raises itself (not the library)."""


class ModelNotLoadedError(ServiceError):
    """A request arrived before the model finished loading (or after shutdown began)."""


class AuthenticationError(ServiceError):
    """UNET3D_API_KEY is set and the request did not present it."""


class MalformedUploadError(ServiceError):
    """The request body is not the multipart form the endpoint documents."""


class UserAuthenticationError(AuthenticationError):
    """UNET3D_USERS_FILE is set and the request did not name a user with the right password."""


class ForbiddenError(ServiceError):
    """The signed-in user may not do this (e.g. record a verdict under another name)."""


class CaseNotFoundError(ServiceError):
    """No case (or mask revision) has the requested id."""


class ConflictError(ServiceError):
    """The change contradicts what is stored (a name taken, a revision that exists)."""


class PreconditionFailedError(ServiceError):
    """If-Match names a version of the case that is no longer the latest."""


class PreconditionRequiredError(ServiceError):
    """A change to a case came without If-Match."""


class StorageUnavailableError(ServiceError):
    """The case database or its file store cannot be reached right now."""


class RetryLaterError(ServiceError):
    """A refusal that passes with time: the answer carries Retry-After (seconds)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = max(int(retry_after_s), 1)


class ServiceBusyError(RetryLaterError):
    """Every inference slot is taken and the wait queue is full (or the UI's session memory is)."""


class ShuttingDownError(RetryLaterError):
    """The server is draining before a restart: it takes no new work."""


class TooManyUploadsError(RetryLaterError):
    """Every upload place (UNET3D_MAX_UPLOADS, all clients together) is taken."""


class RateLimitedError(RetryLaterError):
    """This client sends faster than UNET3D_RATE_LIMIT, or holds UNET3D_MAX_UPLOADS_PER_CLIENT uploads already."""


class TempStorageFullError(RetryLaterError):
    """The upload would take the temp files past UNET3D_TEMP_QUOTA_MB (or past the free disk space)."""


class UploadTimeoutError(ServiceError):
    """The client stopped sending its body, or sent it below UNET3D_UPLOAD_MIN_RATE_KIB_S."""


# nginx's "client closed request": nobody reads the answer, but logs and metrics must not count a 5xx.
CLIENT_CLOSED_REQUEST = 499

# Most specific first: the first isinstance match wins.
STATUS_BY_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (ClientDisconnect, CLIENT_CLOSED_REQUEST),
    (ServiceBusyError, 503),
    (ShuttingDownError, 503),
    (TooManyUploadsError, 503),
    (RateLimitedError, 429),
    (TempStorageFullError, 507),
    (UploadTimeoutError, 408),
    (ModelNotLoadedError, 503),
    (AuthenticationError, 401),
    (ForbiddenError, 403),
    (CaseNotFoundError, 404),
    (ConflictError, 409),
    (PreconditionFailedError, 412),
    (PreconditionRequiredError, 428),
    (StorageUnavailableError, 503),
    (MalformedUploadError, 422),
    (UnsupportedFormatError, 415),
    (UnreadableVolumeError, 400),
    (VolumeTooLargeError, 413),
    (AmbiguousSeriesError, 422),  # several DICOM series: the detail lists them, ?series=UID picks one
    (InvalidVolumeError, 422),
    (ParameterError, 422),
    (InferenceError, 503),
    (ModelLoadError, 503),
    (Unet3dError, 422),
)


_DETAILS = {
    500: "internal error: the server logged the details",
    CLIENT_CLOSED_REQUEST: "the client disconnected before the request was complete",
}


def status_for(error: Exception) -> int:
    """The HTTP status an exception maps to (500 for anything unexpected)."""
    for kind, status in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return status
    return 500


def error_response(error: Exception) -> JSONResponse:
    """The JSON error response for `error`, with Retry-After / WWW-Authenticate where the status needs it."""
    status = status_for(error)
    headers: dict[str, str] = {}
    if isinstance(error, RetryLaterError):
        headers["Retry-After"] = str(error.retry_after_s)
    elif isinstance(error, UserAuthenticationError):
        headers["WWW-Authenticate"] = 'Basic realm="unet3d", charset="UTF-8"'
    elif isinstance(error, AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="unet3d"'
    elif isinstance(error, StorageUnavailableError):
        headers["Retry-After"] = "5"
    detail = _DETAILS.get(status) or str(error)
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into the documented JSON errors."""

    async def known_error(request: Request, error: Exception) -> JSONResponse:
        return error_response(error)

    async def invalid_request(request: Request, error: Exception) -> JSONResponse:
        if not isinstance(error, RequestValidationError):
            return error_response(error)
        return JSONResponse({"detail": _describe_validation(error)}, status_code=422)

    async def client_gone(request: Request, error: Exception) -> JSONResponse:
        logger.info("client disconnected during %s %s", request.method, request.url.path)
        return error_response(error)

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        return error_response(error)

    app.add_exception_handler(ServiceError, known_error)
    app.add_exception_handler(Unet3dError, known_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, unexpected)


def _describe_validation(error: RequestValidationError) -> str:
    problems = []
    for item in error.errors():
        where = " ".join(str(part) for part in item.get("loc", ()) if part != "body")
        problems.append(f"{where}: {item.get('msg', 'invalid value')}")
    return "invalid request: " + "; ".join(problems) + " (see /docs for the accepted parameters)"
