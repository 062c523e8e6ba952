"""gradio_client's `/review`: a verdict for a stored case from a script, with the same rules as the page and as
`PUT /v1/cases/{id}/review` (the signed-in user is the reviewer; an old ETag is refused with a message to reload)."""

from __future__ import annotations

from typing import Any, cast

from unet3d.errors import ParameterError

from ..cases.http import expected_version
from ..cases.schemas import MAX_NOTE, VERDICTS, Verdict
from ..cases.service import CaseService
from ..errors import PreconditionFailedError
from .identity import reviewer_name

REVIEW_API: dict[str, Any] = {
    "api_name": "review",
    "api_description": "Record a verdict for a case: case_id, verdict (accepted, needs_correction or rejected), "
    "score (1-5, or None), note, reviewer (with a login: yours or empty), etag (the case's ETag or version you "
    "reviewed; empty: as it is now; an old one is refused with a message to reload). Returns the case JSON (as "
    "GET /v1/cases/{id}) after the verdict.",
}


def record_from_api(
    cases: CaseService, signed_in: str | None, *, case_id: Any, verdict: Any, score: Any, note: Any, reviewer: Any,
    etag: Any,
) -> dict[str, Any]:  # fmt: skip
    """Check the endpoint's arguments, record the verdict and return the case after it (its JSON).

    Raises:
        ParameterError: an argument is not what the endpoint takes (the message says which and why).
        ForbiddenError: a signed-in user names another reviewer.
        CaseNotFoundError, PreconditionFailedError: no such case, or `etag` is not its current version.
    """
    number, chosen = _case_number(case_id), _verdict(verdict)
    version = _version(etag, number) or cases.store.get_case(number).version
    who = reviewer_name(signed_in, None, str(reviewer or "") or None)
    case = cases.record_review(number, version, verdict=chosen, score=_score(score), note=_note(note), reviewer=who)
    return case.model_dump(mode="json")


def _note(value: Any) -> str:
    text = str(value or "")
    if len(text) > MAX_NOTE:
        raise ParameterError(f"note must be at most {MAX_NOTE} characters, got {len(text)}")
    return text


def _case_number(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if not 1 <= number <= 2**62 or number != value:
        raise ParameterError(f"case_id must be a case's id (a whole number from 1), got {value!r}")
    return number


def _verdict(value: Any) -> Verdict:
    if value not in VERDICTS:
        raise ParameterError(f"verdict must be one of {', '.join(VERDICTS)}, got {value!r}")
    return cast(Verdict, value)


def _score(value: Any) -> int | None:
    if value in (None, "", 0):
        return None
    if not isinstance(value, int | float) or value != int(value) or not 1 <= value <= 5:
        raise ParameterError(f"score must be a whole number from 1 to 5 (or empty), got {value!r}")
    return int(value)


def _version(etag: Any, case_id: int) -> int | None:
    """The case version a script says it reviewed: an ETag (`"12.3"`), a bare version (`3`), or nothing (None:
    the case as it is now)."""
    text = str(etag or "").strip()
    if not text:
        return None
    try:
        return int(text) if text.isdigit() else expected_version(text, case_id)
    except PreconditionFailedError as e:  # not this case's ETag: a wrong argument, not a stale case
        raise ParameterError(
            f'etag must be an ETag of case {case_id} ("{case_id}.N") or a version, got {text[:40]!r}'
        ) from e
