"""Datasets as users bring them: MSD and nnU-Net v2 folders, and the mistakes such folders come with."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import yaml
from helpers import TINY_CONFIG

from train.__main__ import main
from train.config import ConfigError
from train.data import DatasetError, cases, load_pair
from train.errors import CheckpointError
from train.pipeline import fit_and_export
from train.report import evaluate_model
from train.trainer import Trainer

QUICK = ("loop.epochs=1", "loop.steps_per_epoch=1")


@pytest.fixture
def dataset(spheres, tmp_path):
    """A private copy of the spheres dataset and a way to rewrite its dataset.json."""
    root = shutil.copytree(spheres, tmp_path / "data")

    def edit(change):
        path = root / "dataset.json"
        content = json.loads(path.read_text())
        change(content)
        path.write_text(json.dumps(content))
        return root

    return root, edit


def _fit(config, out):
    return fit_and_export(config, out, progress=False)


def test_an_msd_dataset_without_validation_says_how_to_monitor_before_training(dataset, tiny_config, tmp_path):
    root, edit = dataset
    edit(lambda d: (d.pop("validation"), d.__setitem__("test", ["imagesTs/sphere_test_00_0000.nii.gz"])))
    with pytest.raises(DatasetError, match=r"lists no 'validation' cases, so loop.monitor=mIoU cannot be measured"):
        _fit(tiny_config(f"data.root={root}", *QUICK), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    model = _fit(tiny_config(f"data.root={root}", *QUICK, "loop.monitor=loss"), tmp_path / "run")
    card = yaml.safe_load((model / "model.yaml").read_text())
    assert card["training"]["validation"] is None and card["training"]["best_epoch"] == 1
    # MSD's test list holds image paths only: evaluation says so and names the labelled splits.
    with pytest.raises(DatasetError, match=r"lists images without labels .*evaluate a labelled split with --split"):
        evaluate_model(model, root, tmp_path / "report", device="cpu")
    with pytest.raises(DatasetError, match=r"no labelled cases in split 'tset' \(labelled splits: training \(3\)\)"):
        evaluate_model(model, root, tmp_path / "report", split="tset", device="cpu")


def test_the_loss_monitor_works_beside_a_validation_split(tiny_config, tmp_path):
    result = Trainer(tiny_config("loop.epochs=3", "loop.monitor=loss"), tmp_path / "run", progress=False).fit()
    losses = [row["train_loss"] for row in result.history]
    assert result.best_metrics["train_loss"] == min(losses) and "mIoU" in result.best_metrics


def test_an_nnunet_v2_dataset_is_found_from_its_file_ending(dataset, tiny_config, tmp_path):
    root, edit = dataset
    for split in ("validation", "test"):  # nnU-Net v2 keeps no lists: its cases are the files in imagesTr/labelsTr
        edit(lambda d, split=split: d.pop(split))
    edit(lambda d: (d.pop("training"), d.pop("modality"), d.pop("labels")))
    edit(lambda d: d.update(channel_names={"0": "T1"}, labels={"background": 0, "shell": 1, "core": 2}))
    edit(lambda d: d.update(file_ending=".nii.gz", numTraining=3))
    assert [case.name for case in cases(root, "training")] == [f"sphere_training_0{i}" for i in range(3)]
    image = root / "imagesTr" / "sphere_training_02_0000.nii.gz"
    image.rename(image.with_name("moved.nii.gz"))
    with pytest.raises(DatasetError, match=r"sphere_training_02_0000.nii.gz is missing \(nnU-Net naming: labelsTr/"):
        cases(root, "training")
    image.with_name("moved.nii.gz").rename(image)
    assert _fit(tiny_config(f"data.root={root}", *QUICK, "loop.monitor=loss"), tmp_path / "run").is_dir()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(labels={"0": "background", "1": "shell"}), "declares 2 labels \\(background, shell\\) but"),
        (lambda d: d.update(modality={"0": "T1", "1": "T2"}), "declares 2 input channels \\(T1, T2\\): unet3d"),
        (lambda d: d["training"][0].pop("label"), "'training'\\[0\\] must look like"),
        (lambda d: d["training"].append(dict(d["training"][0])), "two cases are named 'sphere_training_00'"),
    ],
)
def test_dataset_json_mistakes_are_named_before_training(dataset, tiny_config, tmp_path, change, message):
    root, edit = dataset
    edit(change)
    with pytest.raises(DatasetError, match=message):
        Trainer(tiny_config(f"data.root={root}", *QUICK), tmp_path / "run", progress=False).fit()


def test_broken_json_and_a_missing_folder_are_clear(dataset, tmp_path, capsys):
    root, _ = dataset
    (root / "dataset.json").write_text('{"training": [}')
    with pytest.raises(DatasetError, match=r"dataset.json is not valid JSON: Expecting value: line 1"):
        cases(root, "training")
    assert main(["fit", "--config", str(TINY_CONFIG), "--out", str(tmp_path / "r"), "--set", "data.root=nowhere"]) == 1
    err = capsys.readouterr().err
    assert "nowhere/dataset.json not found: a dataset is a folder with imagesTr/, labelsTr/" in err
    assert "python -m train prepare-spheres --out DIR" in err


def _rewrite_label(root, name, transform):
    path = root / "labelsTr" / f"{name}.nii.gz"
    image = nib.load(path)
    data, affine = transform(np.asanyarray(image.dataobj), image.affine.copy())
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        (
            lambda a, m: (a.astype(np.float32) * 0.5, m),
            "non-integer values \\(e.g. 0.5\\); the model .* resample labels with nearest",
        ),
        (lambda a, m: (a * 2, m), "labels from 0 to 4, outside 0 .. 2; the model has 3 classes"),
        (lambda a, m: (a[:-2], m), "label shape \\(22, 24, 24\\) differs from image shape \\(24, 24, 24\\)"),
        (lambda a, m: (a, m + np.diag([0, 0, 0.5, 0])), "affine differs from .* \\(by up to 0.5\\): resample the"),
        (lambda a, m: (np.stack([a, a], -1), m), "expected a 3D volume"),
    ],
)
def test_a_bad_label_file_is_named_with_what_is_wrong(dataset, tiny_config, tmp_path, transform, message):
    root, _ = dataset
    path = _rewrite_label(root, "sphere_training_01", transform)
    with pytest.raises(DatasetError, match=message) as error:
        Trainer(tiny_config(f"data.root={root}", *QUICK), tmp_path / "run", progress=False).fit()
    assert str(path) in str(error.value)


def test_case_names_keep_their_dots(dataset):
    root, edit = dataset
    for i in range(2):
        for kind, suffix in (("images", "_0000.nii.gz"), ("labels", ".nii.gz")):
            source = root / f"{kind}Ts" / f"sphere_test_0{i}{suffix}"
            source.rename(root / f"{kind}Ts" / f"sub.{i}{suffix}")
    edit(lambda d: d.update(test=[{"image": f"imagesTs/sub.{i}_0000.nii.gz", "label": f"labelsTs/sub.{i}.nii.gz"}
                                  for i in range(2)]))  # fmt: skip
    assert [case.name for case in cases(root, "test")] == ["sub.0", "sub.1"]
    image, label = load_pair(cases(root, "test")[0], 3)
    assert image.shape == label.shape


def test_a_run_folder_is_never_overwritten_and_a_resume_keeps_its_config(tiny_config, tmp_path):
    Trainer(tiny_config(*QUICK), tmp_path / "run", progress=False).fit()
    with pytest.raises(CheckpointError, match=r"already holds a run .*continue it with --resume, or train into"):
        Trainer(tiny_config(*QUICK), tmp_path / "run", progress=False).fit()
    with pytest.raises(CheckpointError, match=r"different config \(loop.epochs\): --resume continues the same run"):
        Trainer(tiny_config("loop.epochs=2", "loop.steps_per_epoch=1"), tmp_path / "run", progress=False).fit(
            resume=True
        )
    with pytest.raises(CheckpointError, match=r"different config \(model.base_channels\)"):
        Trainer(tiny_config(*QUICK, "model.base_channels=8"), tmp_path / "run", progress=False).fit(resume=True)
    # Where it runs may change: the same run goes on (here: it had finished, so nothing more happens).
    result = Trainer(tiny_config(*QUICK, "loop.log_every=1"), tmp_path / "run", progress=False).fit(resume=True)
    assert result.epochs_run == 1


def test_classes_without_colours_get_the_default_palette(tiny_config, tmp_path):
    model = _fit(tiny_config(*QUICK, "card.classes=[background, shell, {name: core}]"), tmp_path / "run")
    card = yaml.safe_load((model / "model.yaml").read_text())
    assert [c["color"] for c in card["classes"]] == ["#000000", "#e6194b", "#3cb44b"]
    assert "| 2 | core | `#3cb44b` |" in (model / "README.md").read_text()


def test_a_bad_card_section_stops_the_run_before_it_starts(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match=r"config.card does not make a valid model card: inference.overlap"):
        Trainer(tiny_config("card.inference.overlap=1.5"), tmp_path / "run", progress=False)


def test_prepare_spheres_builds_the_tiny_configs_dataset(tmp_path, capsys):
    assert main(["prepare-spheres", "--out", str(tmp_path / "tiny")]) == 0
    assert json.loads(capsys.readouterr().out) == {"training": 4, "validation": 2, "test": 2}
    image, label = load_pair(cases(tmp_path / "tiny", "training")[0], 3)
    assert image.shape == (24, 24, 24) and set(np.unique(label.data)) == {0, 1, 2}
