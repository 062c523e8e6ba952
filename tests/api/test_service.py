"""The service: model loading from settings, card overrides (seed names), limits checked from the header."""

from __future__ import annotations

import pytest
from helpers import BINARY_CARD, write_tiny_model

from api.service import SegmentationService
from api.settings import Settings
from unet3d.errors import ModelLoadError, VolumeTooLargeError


def settings_for(model_dir, **values) -> Settings:
    return Settings(UNET3D_MODEL=str(model_dir), **values)


def test_card_overrides_apply_clip_percentiles_and_pad_multiple(tiny_model_dir):
    service = SegmentationService.from_settings(
        settings_for(tiny_model_dir, clip_percentiles="0.5,99.5", pad_multiple=8)
    )
    assert service.segmenter.card.input.clip_percentiles == (0.5, 99.5)
    assert service.segmenter.card.input.pad_to_multiple == 8


def test_clip_percentiles_none_disables_clipping(tiny_model_dir):
    service = SegmentationService.from_settings(settings_for(tiny_model_dir, clip_percentiles="none"))
    assert service.segmenter.card.input.clip_percentiles is None


def test_without_overrides_the_card_values_stay(tiny_model_dir):
    service = SegmentationService.from_settings(settings_for(tiny_model_dir))
    assert service.segmenter.card.input.clip_percentiles == (1.0, 99.0)
    assert service.segmenter.card.input.pad_to_multiple == 4


def test_pad_multiple_that_does_not_fit_the_network_fails_to_load(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="UNET3D_PAD_MULTIPLE"):
        SegmentationService.from_settings(settings_for(tiny_model_dir, pad_multiple=6))


def test_default_threshold_fills_in_only_when_the_request_has_none(tmp_path):
    binary = write_tiny_model(tmp_path / "binary", card=BINARY_CARD, num_classes=1)
    service = SegmentationService.from_settings(settings_for(binary, default_threshold=0.3))
    assert service.options().threshold == 0.3
    assert service.options(threshold=0.7).threshold == 0.7


def test_a_default_threshold_for_a_multi_class_model_stops_the_start(tiny_model_dir):
    with pytest.raises(ModelLoadError, match=r"UNET3D_DEFAULT_THRESHOLD applies to binary models only; .* 3 classes"):
        SegmentationService.from_settings(settings_for(tiny_model_dir, default_threshold=0.3))


def test_check_refuses_too_many_voxels_before_reading_data(tiny_model_dir, tmp_path, nifti):
    path = tmp_path / "big.nii.gz"
    path.write_bytes(nifti.encode(nifti.blob((30, 30, 30))))
    service = SegmentationService.from_settings(settings_for(tiny_model_dir, max_voxels=1000))
    with pytest.raises(VolumeTooLargeError, match="voxels"):
        service.check(path)


def test_predict_reports_the_display_name_and_the_real_load_time(tiny_model_dir, tmp_path, nifti):
    path = tmp_path / "upload.nii.gz"
    path.write_bytes(nifti.encode(nifti.blob()))
    service = SegmentationService.from_settings(settings_for(tiny_model_dir))
    prediction = service.predict(path, name="patient 7.nii.gz", options=service.options())
    summary = prediction.summary()
    assert summary["filename"] == "patient 7.nii.gz"
    assert summary["timings_ms"]["load"] > 0
    assert prediction.mask.shape == (24, 20, 16)
