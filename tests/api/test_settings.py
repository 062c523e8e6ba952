"""Settings from UNET3D_* environment variables, including the seed's names."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from api.settings import Settings, get_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:

    for name in list(os.environ):
        if name.startswith("UNET3D_"):
            monkeypatch.delenv(name)


def test_defaults_are_closed_and_bounded():
    settings = Settings()
    assert settings.model.endswith("models/unet3d-brain-tissue")
    assert settings.allow_origins == []
    assert settings.api_key is None
    assert settings.max_concurrency == 1
    assert settings.queue_size == 8
    assert not settings.overrides_clip_percentiles


def test_seed_model_path_is_an_alias_and_model_wins(monkeypatch):
    monkeypatch.setenv("UNET3D_MODEL_PATH", "/models/seed")
    assert Settings().model == "/models/seed"
    monkeypatch.setenv("UNET3D_MODEL", "acme/unet3d")
    assert Settings().model == "acme/unet3d"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("https://a.org, https://b.org", ["https://a.org", "https://b.org"]), ('["https://a.org"]', ["https://a.org"])],
)
def test_allow_origins_accepts_commas_or_json(monkeypatch, raw, expected):
    monkeypatch.setenv("UNET3D_ALLOW_ORIGINS", raw)
    assert Settings().allow_origins == expected


@pytest.mark.parametrize(("raw", "expected"), [("0.5,99.5", (0.5, 99.5)), ("[2, 98]", (2.0, 98.0)), ("none", None)])
def test_clip_percentiles_override_the_card_when_given(monkeypatch, raw, expected):
    monkeypatch.setenv("UNET3D_CLIP_PERCENTILES", raw)
    settings = Settings()
    assert settings.clip_percentiles == expected
    assert settings.overrides_clip_percentiles


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("UNET3D_CLIP_PERCENTILES", "99,1"),
        ("UNET3D_DEFAULT_THRESHOLD", "1.5"),
        ("UNET3D_MAX_CONCURRENCY", "0"),
        ("UNET3D_QUEUE_SIZE", "-1"),
        ("UNET3D_MAX_UPLOAD_MB", "0"),
        ("UNET3D_PAD_MULTIPLE", "0"),
        ("UNET3D_PRECISION", "fp64"),
    ],
)
def test_invalid_values_are_refused_with_the_field_name(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("UNET3D_").lower()):
        Settings()


def test_api_key_is_kept_secret_in_repr(monkeypatch):
    monkeypatch.setenv("UNET3D_API_KEY", "hunter2")
    settings = Settings()
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings)


def test_sizes_convert_to_bytes(monkeypatch):
    monkeypatch.setenv("UNET3D_MAX_UPLOAD_MB", "1.5")
    monkeypatch.setenv("UNET3D_MAX_DECOMPRESSED_MB", "2")
    settings = Settings()
    assert settings.max_upload_bytes == 1572864
    assert settings.max_decompressed_bytes == 2097152


def test_get_settings_reads_the_environment_once(monkeypatch):
    get_settings.cache_clear()
    monkeypatch.setenv("UNET3D_QUEUE_SIZE", "3")
    first = get_settings()
    monkeypatch.setenv("UNET3D_QUEUE_SIZE", "5")
    assert get_settings() is first
    assert first.queue_size == 3
    get_settings.cache_clear()
