"""Review cases that last: a volume, its mask revisions and its verdicts in a database (SQLite or PostgreSQL).

Not to be confused with `api/review.py`, the UI's state for the one scan on screen. The map:
`tables` + `migrations/` (schema), `database` (engines, migrating), `files` (content-addressed volumes and masks),
`store` (SQL, compare-and-set), `masks` (label checks, changes), `service` (the three together), `users` + `access`
(who is who), `routes` + `http` (the HTTP API), `export` (reviews.csv), `importer` + `cli` (`unet3d review`,
`unet3d users`).
"""

from __future__ import annotations

from ..errors import StorageUnavailableError
from ..settings import Settings
from .access import users_directory
from .routes import router
from .service import CaseService
from .users import UsersFileError

__all__ = ["CaseService", "open_cases", "router"]


def open_cases(settings: Settings) -> CaseService:
    """Open the review storage at start-up: migrate the database, prepare the files, read the users file.

    Raises:
        StorageUnavailableError: any of them cannot be used (the message says which and what to set).
    """
    if settings.users_file is not None:
        try:
            users_directory(settings.users_file).names()
        except UsersFileError as e:
            raise StorageUnavailableError(f"{e}; fix UNET3D_USERS_FILE or unset it") from e
    return CaseService.open(settings)
