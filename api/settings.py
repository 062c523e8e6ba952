"""Deployment settings from the environment (prefix `UNET3D_`), read once through the cached `get_settings()`."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from unet3d.hub import default_model
from unet3d.options import Precision, check_clip_percentiles, check_pad_multiple, check_threshold

from .clients import check_proxies

_NONE_WORDS = {"none", "null", "off", "false"}


class Settings(BaseSettings):
    """Every knob of the service; see DESIGN.md ("Settings") for the contract.

    Sizes are in MiB (`max_upload_mb`, `max_decompressed_mb`); `allow_origins` and `clip_percentiles` accept
    a comma-separated list or a JSON list; `clip_percentiles=none` disables clipping.
    """

    model_config = SettingsConfigDict(env_prefix="UNET3D_", env_ignore_empty=True, extra="ignore")

    # The seed called it UNET3D_MODEL_PATH; UNET3D_MODEL wins when both are set.
    model: str = Field(
        default_factory=default_model, validation_alias=AliasChoices("UNET3D_MODEL", "UNET3D_MODEL_PATH")
    )
    model_revision: str | None = None
    device: str = "auto"
    precision: Precision = "auto"
    max_upload_mb: float = Field(default=512.0, gt=0)
    max_decompressed_mb: float = Field(default=2048.0, gt=0)
    max_voxels: int = Field(default=512**3, gt=0)
    allow_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_concurrency: int = Field(default=1, ge=1, le=64)
    queue_size: int = Field(default=8, ge=0, le=1024)
    api_key: SecretStr | None = None
    default_threshold: float | None = None
    clip_percentiles: Annotated[tuple[float, float] | None, NoDecode] = None
    pad_multiple: int | None = None
    # Review storage (api/cases): volumes, masks and the default SQLite database live under data_dir.
    data_dir: Path = Field(default_factory=lambda: default_data_dir())
    database_url: SecretStr | None = None
    users_file: Path | None = None
    # Hostile traffic (api/admission.py, api/clients.py, api/tempfiles.py): see docs/http.md#settings.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    rate_limit: float = Field(default=0.0, ge=0)
    rate_burst: int = Field(default=60, ge=1, le=100_000)
    max_uploads: int = Field(default=32, ge=1, le=10_000)
    max_uploads_per_client: int = Field(default=4, ge=1, le=10_000)
    upload_stall_s: float = Field(default=15.0, gt=0, le=3600)
    upload_min_rate_kib_s: float = Field(default=8.0, ge=0)
    temp_quota_mb: float = Field(default=8192.0, gt=0)
    # The review UI's per-tab data (api/ui/sessions.py).
    session_memory_mb: float = Field(default=2048.0, gt=0)
    session_wait_s: float = Field(default=10.0, ge=0, le=600)
    session_ttl_s: float = Field(default=3600.0, gt=0)
    # Restarts (api/lifecycle.py, api/server.py).
    drain_s: float = Field(default=0.0, ge=0, le=600)
    graceful_shutdown_s: float = Field(default=8.0, ge=0, le=3600)

    @field_validator("allow_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _split_list(value)
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _split_list(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        return check_proxies(value)

    @field_validator("clip_percentiles", mode="before")
    @classmethod
    def _parse_percentiles(cls, value: Any) -> Any:
        if isinstance(value, str):
            return None if value.strip().lower() in _NONE_WORDS else _split_list(value)
        return value

    # The rules are the library's (unet3d.options): one message for a value, whichever way it arrives.
    @field_validator("clip_percentiles")
    @classmethod
    def _check_percentiles(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return check_clip_percentiles(value, "clip_percentiles")

    @field_validator("default_threshold")
    @classmethod
    def _check_threshold(cls, value: float | None) -> float | None:
        return check_threshold(value, "default_threshold")

    @field_validator("pad_multiple")
    @classmethod
    def _check_pad_multiple(cls, value: int | None) -> int | None:
        return None if value is None else check_pad_multiple(value, None, "pad_multiple")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_decompressed_bytes(self) -> int:
        return int(self.max_decompressed_mb * 2**20)

    @property
    def temp_quota_bytes(self) -> int:
        return int(self.temp_quota_mb * 2**20)

    @property
    def session_memory_bytes(self) -> int:
        return int(self.session_memory_mb * 2**20)

    @property
    def overrides_clip_percentiles(self) -> bool:
        """True when UNET3D_CLIP_PERCENTILES was given (None then means "no clipping", not "use the card")."""
        return "clip_percentiles" in self.model_fields_set


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/unet3d`, else `~/.local/share/unet3d`: one place whatever the working directory, so that
    `unet3d review import` and `unet3d serve` started from different folders share one database."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "unet3d"


def _split_list(text: str) -> list[str]:
    stripped = text.strip()
    if stripped.startswith("["):
        parsed = json.loads(stripped)
        return [str(item) for item in parsed]
    return [item.strip() for item in stripped.split(",") if item.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first use (never at import)."""
    return Settings()
