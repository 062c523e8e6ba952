"""Model directories in and out of training: export trained weights as one (config.json, model.safetensors,
model.yaml, README.md), and start a run from one's weights (model.init)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from unet3d import UNet3D
from unet3d.card import DEFAULT_COLORS, card_from_dict
from unet3d.errors import ModelLoadError
from unet3d.hub import CARD_NAME, ModelSource, check_model_dir, load_unet, resolve_source

from .config import ConfigError, TrainConfig

CARD_HEADER = "# unet3d model card: classes, input contract, inference defaults and measured metrics.\n"
QC_NOTE = (
    "Every prediction's summary carries `qc: {score, warnings}`, judged against these limits (a check scores 1 at "
    "`ok`, 0.5 at `warn`, and warns beyond it). They were chosen on validation scans and synthetic negatives, never "
    "the test set, by the command below; model.yaml also holds the prior map of an upright brain that the orientation "
    "and contrast checks compare with."
)


def build_card(config: TrainConfig, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """model.yaml contents for these settings (metrics are filled in by `train evaluate`)."""
    card = config.card
    data = config.data
    return {
        "name": card.name,
        "version": card.version,
        "task": "3D semantic segmentation",
        "description": card.description,
        "classes": [
            {"index": i, "name": c["name"], "color": c.get("color", DEFAULT_COLORS[i % len(DEFAULT_COLORS)]), **c}
            for i, c in enumerate(card.classes)
        ],
        "input": {
            "channels": 1,
            "normalization": "minmax",
            "clip_percentiles": data.clip_percentiles,
            "pad_to_multiple": 2**config.model.depth,
            "spacing_mm": data.spacing_mm,
        },
        "inference": {"patch_size": data.patch_size, "overlap": 0.25, "blending": "gaussian", **card.inference},
        "postprocess": card.postprocess,
        "license": card.license,
        "intended_use": card.intended_use,
        "metrics": metrics or {},
    }


def export_model(model: UNet3D, card: dict[str, Any], out: str | Path) -> Path:
    """Write the model directory and verify it loads back strictly; returns its path."""
    out = Path(out)
    model.cpu().eval().save_pretrained(out)
    write_card(card, out)
    check_model_dir(out)
    return out


def read_card(directory: Path) -> dict[str, Any]:
    """A model directory's model.yaml as a dict, to change and give back to write_card."""
    card: dict[str, Any] = yaml.safe_load((directory / CARD_NAME).read_text(encoding="utf-8"))
    return card


def write_card(card: dict[str, Any], out: Path) -> None:
    """Write model.yaml and the Hugging Face README.md generated from it; the card must be one the loader takes.

    Raises:
        CardError: it is not (nothing is written).
    """
    card_from_dict(card)
    (out / CARD_NAME).write_text(CARD_HEADER + yaml.safe_dump(card, sort_keys=False), encoding="utf-8")
    (out / "README.md").write_text(model_readme(card), encoding="utf-8")


def model_readme(card: dict[str, Any]) -> str:
    """HF model card with the YAML header the Hub reads (library_name, license, tags)."""
    header = {
        "library_name": "unet3d",
        "license": card.get("license", "mit"),
        "tags": ["unet3d", "medical-imaging", "image-segmentation", "3d", "nifti", "safetensors"],
        "pipeline_tag": "image-segmentation",
    }
    classes = "\n".join(
        f"| {c.get('index', i)} | {c['name']} | `{c.get('color', '')}` |" for i, c in enumerate(card["classes"])
    )
    metrics = card.get("metrics") or {}
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).strip(),
        "---",
        f"# {card['name']} (v{card['version']})",
        "",
        card.get("description", ""),
        "",
        f"**Intended use:** {card.get('intended_use', 'research/demo, not for clinical use')}.",
        "",
        "## Classes",
        "| index | name | colour |",
        "|---|---|---|",
        classes,
        "",
        "## Use",
        "```python",
        "from unet3d import Segmenter",
        'seg = Segmenter.from_pretrained("<this repo id or folder>")',
        'seg.predict("t1.nii.gz").save("t1_mask.nii.gz")  # mask on the exact input grid',
        "```",
        "",
        "## Input",
        "```yaml",
        yaml.safe_dump({"input": card.get("input"), "inference": card.get("inference")}, sort_keys=False).strip(),
        "```",
    ]
    if metrics:
        lines += ["", "## Measured metrics", "```yaml", yaml.safe_dump(metrics, sort_keys=False).strip(), "```"]
    qc = card.get("qc")
    if qc:  # the limits and how they were chosen; the prior (numbers only) stays in model.yaml
        shown = yaml.safe_dump({k: v for k, v in qc.items() if k != "prior"}, sort_keys=False).strip()
        lines += ["", "## Quality control", QC_NOTE, "```yaml", shown, "```"]
    training = card.get("training")
    if training:
        lines += ["", "## Training", "```yaml", yaml.safe_dump(training, sort_keys=False).strip(), "```"]
    return "\n".join(lines) + "\n"


# What a network's weights depend on: another dropout rate loads the same tensors.
SHAPE_KEYS = ("in_channels", "num_classes", "base_channels", "depth", "norm")


def initialise(model: UNet3D, source: str) -> ModelSource:
    """Load `source`'s weights (model.init: a model directory or Hub repo id) into `model`, strictly; returns where
    they came from, for the card.

    Raises:
        ConfigError: the source cannot be loaded, or its network has another shape than `model`.
    """
    try:
        found = resolve_source(source)
        loaded = load_unet(found)
    except ModelLoadError as e:
        raise ConfigError(f"model.init: {e}") from e
    ours, theirs = ({k: getattr(unet, k) for k in SHAPE_KEYS} for unet in (model, loaded))
    if ours != theirs:
        differ = ", ".join(f"{k} {theirs[k]} (this config: {ours[k]})" for k in SHAPE_KEYS if ours[k] != theirs[k])
        raise ConfigError(
            f"model.init: '{found.id}' is a network of another shape: {differ}. Set the config's model section and "
            "card.classes to match it, or leave model.init out to start from random weights"
        )
    model.load_state_dict(loaded.state_dict(), strict=True)
    return found
