import dataclasses
import gzip
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import yaml
from helpers import BINARY_CARD, TINY_CARD, sphere_volume, write_nifti, write_tiny_model

from unet3d import ModelLoadError, Segmenter, load_volume, volume_from_array
from unet3d.errors import CardError, InvalidVolumeError, ParameterError, UnreadableVolumeError, VolumeTooLargeError

SUMMARY_FIELDS = {
    "filename",
    "input_shape",
    "padded_shape",
    "spacing_mm",
    "runtime_ms",
    "device",
    "threshold_used",
    "class_histogram",
    "classes",
    "model",
    "timings_ms",
}


@pytest.fixture(scope="module")
def segmenter(tiny_model_dir):
    return Segmenter.from_pretrained(tiny_model_dir, device="cpu")


def test_predict_accepts_a_path_a_volume_or_an_array_with_the_same_result(segmenter, volume_path):
    from_path = segmenter.predict(volume_path).mask
    from_volume = segmenter.predict(load_volume(volume_path)).mask
    from_array = segmenter.predict(sphere_volume()).mask
    assert from_path.dtype == np.uint8 and from_path.shape == (24, 20, 16)
    assert np.array_equal(from_path, from_volume) and np.array_equal(from_path, from_array)


def test_summary_has_the_http_fields_and_volumes_add_up_to_the_input(segmenter, tmp_path):
    affine = np.diag([0.5, 2.0, 1.5, 1.0])
    path = write_nifti(tmp_path / "scan.nii.gz", sphere_volume(), affine)
    summary = segmenter.predict(path).summary()
    assert set(summary) >= SUMMARY_FIELDS
    assert summary["filename"] == "scan.nii.gz"
    assert summary["spacing_mm"] == [0.5, 2.0, 1.5]
    assert sum(summary["class_histogram"].values()) == 24 * 20 * 16
    assert [c["name"] for c in summary["classes"]] == ["background", "shell", "core"]
    assert sum(c["volume_ml"] for c in summary["classes"]) == pytest.approx(24 * 20 * 16 * 1.5 / 1000)
    assert summary["threshold_used"] is None
    assert set(summary["timings_ms"]) == {"load", "preprocess", "infer", "postprocess", "encode"}
    assert summary["model"]["revision"] == "local"
    json.dumps(summary)


def test_summary_says_which_classes_reach_the_edge_of_the_scan(segmenter, tmp_path):
    prediction = segmenter.predict(write_nifti(tmp_path / "scan.nii.gz", sphere_volume()))
    mask = np.zeros((24, 20, 16), np.uint8)
    mask[4:10, 4:10, 4:10] = 1  # inside
    mask[12:20, 10:20, 6:9] = 2  # reaches the last J slice: cut by the field of view
    summary = dataclasses.replace(prediction, mask=mask).summary()
    assert [c["touches_border"] for c in summary["classes"]] == [True, False, True]
    summary = dataclasses.replace(prediction, mask=np.zeros_like(mask)).summary()
    assert [c["touches_border"] for c in summary["classes"]] == [True, None, None]  # absent: no answer


def test_progress_goes_through_the_stages_in_order(segmenter, volume_path):
    stages = []
    segmenter.predict(volume_path, progress=lambda f, s: stages.append(s) if not stages or stages[-1] != s else None)
    assert stages == ["load", "preprocess", "infer", "postprocess"]


def test_probabilities_are_on_the_input_grid_and_sum_to_one(segmenter, volume_path, tmp_path):
    prediction = segmenter.predict(volume_path, probabilities=True, mode="sliding")
    assert prediction.probabilities is not None and prediction.probabilities.shape == (3, 24, 20, 16)
    np.testing.assert_allclose(prediction.probabilities.sum(0), 1, atol=1e-4)
    assert np.array_equal(prediction.probabilities.argmax(0), prediction.mask)
    import nibabel as nib

    saved = nib.load(prediction.save_probabilities(tmp_path / "p.nii.gz"))
    assert saved.shape == (24, 20, 16, 3)
    assert np.array_equal(saved.affine, prediction.volume.affine)


def test_model_spacing_resamples_internally_but_returns_the_input_grid(tmp_path, volume_path):
    card = {**TINY_CARD, "input": {**TINY_CARD["input"], "spacing_mm": [1.0, 1.0, 1.0]}}
    model_dir = write_tiny_model(tmp_path / "m", card=card)
    segmenter = Segmenter.from_pretrained(model_dir, device="cpu")
    path = write_nifti(tmp_path / "thick.nii.gz", sphere_volume(), np.diag([0.8, 0.8, 3.0, 1.0]))
    prediction = segmenter.predict(path)
    assert prediction.mask.shape == (24, 20, 16)
    assert prediction.network_shape[2] >= 48  # 16 slices of 3 mm → 48 at 1 mm


def test_crop_to_foreground_keeps_background_outside_the_box(tmp_path):
    card = {**TINY_CARD, "inference": {**TINY_CARD["inference"], "crop_foreground": True, "crop_margin": 2}}
    segmenter = Segmenter.from_pretrained(write_tiny_model(tmp_path / "m", card=card), device="cpu")
    data = np.zeros((40, 40, 40), np.float32)
    data[10:30, 12:28, 14:26] = sphere_volume((20, 16, 12)) + 100
    prediction = segmenter.predict(data)
    assert prediction.mask.shape == (40, 40, 40)
    assert prediction.network_shape == (24, 20, 16)
    assert not prediction.mask[:8].any() and not prediction.mask[32:].any()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "fast"}, "mode must be one of"),
        ({"threshold": 2.0}, r"threshold must be in \(0, 1\), got 2.0"),
        ({"threshold": 0.5}, "threshold applies to binary models only; this model has 3 classes"),
        ({"threshold": "0.5"}, r"threshold must be a number in \(0, 1\), got '0.5'"),
        ({"overlap": 1.0}, r"overlap must be a number in \[0, 1\), got 1.0"),
        ({"patch_size": (8, 8)}, r"patch_size must be one size or three, each a multiple of 4, got \(8, 8\)"),
        ({"patch_size": (6, 8, 8)}, r"each a multiple of 4, got \(6, 8, 8\)"),
    ],
)
def test_bad_options_are_parameter_errors(segmenter, volume_path, options, message):
    with pytest.raises(ParameterError, match=message):
        segmenter.predict(volume_path, **options)


def test_one_patch_size_means_a_cube_and_arrays_take_a_geometry(segmenter, volume_path):
    cube = segmenter.predict(volume_path, mode="sliding", patch_size=8)
    assert np.array_equal(cube.mask, segmenter.predict(volume_path, mode="sliding", patch_size=(8, 8, 8)).mask)
    source = load_volume(volume_path)
    placed = segmenter.predict(volume_from_array(source.data, source.affine * np.diag([2, 2, 2, 1])))
    assert placed.summary()["spacing_mm"] == [2.0, 2.0, 2.0]
    assert placed.volume.voxel_volume_ml == pytest.approx(8 * source.voxel_volume_ml)
    assert "mask (24, 20, 16) uint8 (background: " in repr(placed) and len(repr(placed)) < 300


@pytest.mark.parametrize(
    ("given", "error", "message"),
    [
        (np.zeros((8, 8, 8), np.complex64), InvalidVolumeError, "expected an array of real numbers .* complex64"),
        (
            [[[1.0]]],
            ParameterError,
            "predict takes a .nii/.nii.gz path, a DICOM folder or .zip, a Volume or a numpy array, got list",
        ),
        ("no/such/scan.nii.gz", UnreadableVolumeError, "no such file: 'no/such/scan.nii.gz'"),
    ],
)
def test_inputs_that_are_not_volumes_are_named(segmenter, given, error, message):
    with pytest.raises(error, match=message):
        segmenter.predict(given)


def test_the_caps_given_at_load_apply_to_every_input_and_a_display_name_replaces_the_files(
    tiny_model_dir, volume_path, tmp_path
):
    capped = Segmenter.from_pretrained(tiny_model_dir, device="cpu", max_voxels=8000, max_decompressed_bytes=40_000)
    many = write_nifti(tmp_path / "many.nii.gz", np.zeros((24, 24, 24), np.uint8))  # 13824 voxels in 14 kB
    with pytest.raises(VolumeTooLargeError, match=r"volume has 13824 voxels \(24×24×24\), more than the limit of 8000"):
        capped.predict(many)
    data = np.zeros((16, 16, 16), np.uint8)  # 4 kB of voxels, followed by 64 kB of zeros inside the stream
    padded = tmp_path / "padded.nii.gz"
    padded.write_bytes(gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes() + bytes(64_000)))
    with pytest.raises(VolumeTooLargeError, match="the file inflates to more than the limit"):
        capped.predict(padded)
    with pytest.raises(VolumeTooLargeError, match="more than the limit of 8000"):
        capped.predict(sphere_volume((24, 24, 24)))
    named = capped.predict(volume_path, name="patient 7.nii.gz")  # 7680 float32 voxels: within both caps
    assert named.summary()["filename"] == "patient 7.nii.gz" and named.summary()["timings_ms"]["load"] > 0
    assert capped.predict(load_volume(volume_path), name="a.nii.gz").volume.name == "a.nii.gz"


def test_bad_construction_options_are_refused(tiny_model_dir):
    with pytest.raises(ParameterError, match="precision must be one of auto, fp32, bf16, fp16, got 'int8'"):
        Segmenter.from_pretrained(tiny_model_dir, precision="int8")


def test_a_binary_model_thresholds_its_foreground_probability(tmp_path, volume_path):
    model_dir = write_tiny_model(tmp_path / "binary", card=BINARY_CARD, num_classes=1)
    segmenter = Segmenter.from_pretrained(model_dir, device="cpu")
    default, low, high = (segmenter.predict(volume_path, threshold=t) for t in (None, 0.05, 0.95))
    assert (default.threshold_used, low.threshold_used, high.threshold_used) == (0.5, 0.05, 0.95)
    assert high.mask.sum() <= default.mask.sum() <= low.mask.sum()
    assert low.mask.sum() > high.mask.sum()
    assert set(np.unique(low.mask)) <= {0, 1}


def test_constant_volume_is_refused(segmenter):
    with pytest.raises(InvalidVolumeError, match="constant"):
        segmenter.predict(np.ones((8, 8, 8), np.float32))


def test_a_card_that_disagrees_with_the_network_is_refused(tmp_path):
    model_dir = write_tiny_model(tmp_path / "two", card={**TINY_CARD, "classes": TINY_CARD["classes"][:2]})
    with pytest.raises(CardError, match="lists 2 classes but the network has 3 outputs"):
        Segmenter.from_pretrained(model_dir, device="cpu")


def test_single_safetensors_file_loads_with_its_config_beside_it(tiny_model_dir, tmp_path, volume_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    segmenter = Segmenter.from_pretrained(copy / "model.safetensors", device="cpu")
    assert segmenter.source.revision == "local" and len(segmenter.source.sha256) == 64
    assert segmenter.info()["name"] == "tiny-test"


@pytest.mark.parametrize("name", ["model.pt", "pytorch_model.bin", "ckpt.pth"])
def test_pickle_checkpoints_are_refused_never_unpickled(tmp_path, name):
    marker = tmp_path / "pwned"
    payload = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('x')"

    class Evil:
        def __reduce__(self):
            return (exec, (payload,))

    import pickle

    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / name).write_bytes(pickle.dumps(Evil()))
    (folder / "config.json").write_text("{}")
    (folder / "model.yaml").write_text(yaml.safe_dump(TINY_CARD))
    for source in (folder, folder / name):
        with pytest.raises(ModelLoadError, match="pickled checkpoints can run arbitrary code"):
            Segmenter.from_pretrained(source, device="cpu")
    assert not marker.exists()


def test_weights_that_do_not_match_the_config_fail_strictly(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "base_channels": 8}))
    with pytest.raises(ModelLoadError, match=r"do not match its config\.json"):
        Segmenter.from_pretrained(copy, device="cpu")


def test_corrupt_weights_and_missing_files_are_clear_errors(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    (copy / "model.safetensors").write_bytes(b"<html>not found</html>")
    with pytest.raises(ModelLoadError, match="not a valid safetensors file"):
        Segmenter.from_pretrained(copy, device="cpu")
    (copy / "model.yaml").unlink()
    with pytest.raises(ModelLoadError, match=r"'model\.yaml' is missing"):
        Segmenter.from_pretrained(copy, device="cpu")
    with pytest.raises(ModelLoadError, match="does not exist"):
        Segmenter.from_pretrained(tmp_path / "nowhere", device="cpu")
