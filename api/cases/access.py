"""Who may use /v1/cases, and under which name a verdict or a revision is recorded.

Two modes, decided by UNET3D_USERS_FILE:
- users file set: every /v1/cases and /v1/reviews.csv request names a user from the file, with HTTP basic auth or
  `Authorization: Bearer NAME:PASSWORD`; that user is the reviewer, and a request naming anyone else is refused (403).
  The file replaces the API key for these routes (the key names nobody); UNET3D_API_KEY still guards the rest.
- no users file (one person on a laptop): the routes sit under UNET3D_API_KEY like the rest of /v1, and the reviewer
  is whatever name the request gives. Anyone who can reach the server can write under any name: one person only.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from unet3d.errors import ParameterError

from ..deps import SettingsDep, require_api_key
from ..errors import ForbiddenError, StorageUnavailableError, UserAuthenticationError
from .users import UserDirectory, UsersFileError, check_user_name

SIGN_IN = "sign in with HTTP basic auth (curl -u NAME) or 'Authorization: Bearer NAME:PASSWORD'"


@dataclass(frozen=True)
class Caller:
    """The signed-in user (users-file mode), or None in single-user mode."""

    user: str | None


@lru_cache(maxsize=4)
def users_directory(path: Path) -> UserDirectory:
    """The (cached) users file at `path`."""
    return UserDirectory(Path(path))


def presented_credentials(request: Request) -> tuple[str, str] | None:
    """(name, password) from `Authorization: Basic ...` or `Authorization: Bearer NAME:PASSWORD`."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            value = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    elif scheme.lower() != "bearer":
        return None
    name, colon, password = value.partition(":")
    return (name, password) if colon and name else None


def require_case_access(request: Request, settings: SettingsDep) -> Caller:
    """The dependency of every /v1/cases route (a plain function: FastAPI runs the slow KDF off the event loop).

    Raises:
        UserAuthenticationError: users-file mode, and no valid user credentials.
        AuthenticationError: single-user mode with UNET3D_API_KEY set, and no valid key.
    """
    if settings.users_file is None:
        require_api_key(request, settings)
        return Caller(None)
    credentials = presented_credentials(request)
    try:
        valid = credentials is not None and users_directory(settings.users_file).verify(*credentials)
    except UsersFileError as e:
        raise StorageUnavailableError(f"the server's users file cannot be used: {e}") from e
    if not valid or credentials is None:
        raise UserAuthenticationError(f"missing or wrong user name or password: {SIGN_IN}")
    return Caller(credentials[0])


CallerDep = Annotated[Caller, Depends(require_case_access)]


def acting_name(caller: Caller, given: str | None, *, role: str = "reviewer") -> str:
    """The name a verdict or revision is recorded under.

    Raises:
        ForbiddenError: a signed-in user names someone else.
        ParameterError: single-user mode and no (valid) name given.
    """
    if caller.user is None:
        if given is None or not given.strip():
            raise ParameterError(f"name the {role}: '{role}' is required (the server has no users file)")
        return check_user_name(given)
    if given is not None and given.strip() and given.strip() != caller.user:
        raise ForbiddenError(
            f"you are signed in as '{caller.user}': nothing can be recorded under the name '{given.strip()[:100]}'; "
            f"leave '{role}' out or send your own name"
        )
    return caller.user
