"""Who is reviewing in the UI: the login Gradio asks for, and the name a verdict or a correction is recorded under.

Three modes, as for the HTTP API (`api.cases.access`):
- `UNET3D_USERS_FILE`: Gradio's login checks a user of the file; that user is the reviewer, and nothing can be
  recorded under another name.
- `UNET3D_API_KEY` only: any user name with the key as password (as before); the reviewer is the name typed at the
  login. This mode trusts that name: everyone who has the key can sign as anyone.
- neither (one person on a laptop): no login; the page asks for a reviewer name once per tab.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from unet3d.errors import ParameterError

from ..cases.access import Caller, acting_name, users_directory
from ..cases.users import UsersFileError
from ..deps import key_matches

logger = logging.getLogger(__name__)

Login = Callable[[str, str], bool]
USERS_MESSAGE = "Sign in with your reviewer name and password (UNET3D_USERS_FILE)."
KEY_MESSAGE = (
    "This unet3d server is protected by its API key: any user name, the key as password. "
    "The name you type is the reviewer your verdicts are recorded under."
)
NAME_NEEDED = "Type your name in 'Reviewer' (above the tabs) first: verdicts and corrections are recorded under it."


def ui_login(api_key: SecretStr | None, users_file: Path | None) -> tuple[Login | None, str]:
    """Gradio's login check and the text of its login page, for the deployment's settings (None: no login)."""
    if users_file is not None:
        directory = users_directory(Path(users_file))

        def user_matches(name: str, password: str) -> bool:
            try:
                return directory.verify(name, password)
            except UsersFileError as e:  # a broken file refuses everyone, and says why in the log
                logger.error("UI login refused: the users file cannot be used: %s", e)
                return False

        return user_matches, USERS_MESSAGE
    if api_key is not None:
        key = api_key
        return (lambda _name, password: key_matches(password, key)), KEY_MESSAGE
    return None, ""


def reviewer_name(signed_in: str | None, typed: str | None, given: str | None = None) -> str:
    """The name to record: the signed-in user (a different `given` name is refused), else the name `given` by an
    API call, else the one typed in the tab.

    Raises:
        ForbiddenError: a signed-in user names someone else.
        ParameterError: no login and no valid name.
    """
    named = (given or "").strip() or None
    if signed_in is not None:
        return acting_name(Caller(signed_in), named)
    name = named or (typed or "").strip()
    if not name:
        raise ParameterError(NAME_NEEDED)
    return acting_name(Caller(None), name)
