"""The service: model loading from settings, card overrides (seed names), limits checked from the header."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from helpers import BINARY_CARD, PROC_IO, FileReads, write_tiny_model
from starlette.testclient import TestClient

from api.main import create_app
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


@pytest.mark.skipif(not PROC_IO.exists(), reason="counts the bytes read in /proc/self/io (Linux)")
def test_one_predict_request_inflates_the_upload_once(tiny_model_dir):
    app = create_app()
    app.state.service = SegmentationService.from_settings(settings_for(tiny_model_dir))
    noise = np.random.default_rng(0).integers(-(2**15), 2**15, (96, 96, 64), dtype=np.int16)  # gzip cannot shrink it
    payload = gzip.compress(nib.Nifti1Image(noise, np.eye(4)).to_bytes(), compresslevel=1)
    client = TestClient(app)
    files = {"file": ("t1.nii.gz", payload, "application/gzip")}
    assert client.post("/v1/predict", files=files).status_code == 200  # the first request imports what it needs
    with FileReads("/file.nii.gz") as reads:  # the server's own name for the upload
        response = client.post("/v1/predict", files=files)
    assert response.status_code == 200, response.text
    assert response.json()["timings_ms"]["load"] > 0
    # Opened twice: the header check before the inference queue, then the one pass that checks and loads it all;
    # its bytes are read once (plus the first block the header check inflates), never again by nibabel.
    assert reads.opens == 2
    assert len(payload) <= reads.bytes < 1.1 * len(payload)
