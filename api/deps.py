"""FastAPI dependencies: the settings, the loaded service, and the optional API key check (/v1/* and the UI)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request
from pydantic import SecretStr

from .errors import AuthenticationError, ModelNotLoadedError
from .service import SegmentationService
from .settings import Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_service(request: Request) -> SegmentationService:
    """The service the lifespan loaded.

    Raises:
        ModelNotLoadedError: the model is not (or no longer) loaded.
    """
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise ModelNotLoadedError("the model is not loaded yet: retry in a few seconds")
    return service


ServiceDep = Annotated[SegmentationService, Depends(get_service)]


def presented_key(request: Request) -> str | None:
    """The key from `X-API-Key`, else from `Authorization: Bearer <key>`."""
    header = request.headers.get("x-api-key")
    if header:
        return header
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_matches(given: str | None, key: SecretStr) -> bool:
    """Whether `given` is the key, in constant time (digests first: compare_digest is constant-time only for equal
    lengths). Shared by /v1/* (headers) and the UI's login form (password)."""
    if given is None:
        return False
    expected = hashlib.sha256(key.get_secret_value().encode()).digest()
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), expected)


def require_api_key(request: Request, settings: SettingsDep) -> None:
    """When UNET3D_API_KEY is set, refuse requests that do not present it.

    Raises:
        AuthenticationError: the key is missing or wrong.
    """
    if settings.api_key is None:
        return
    if not key_matches(presented_key(request), settings.api_key):
        raise AuthenticationError(
            "missing or wrong API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'"
        )
