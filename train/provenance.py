"""What a run was trained and validated on: every file with its sha256, where it came from, generator and seeds."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .config_checks import BRAIN_REFERENCES
from .data import read_dataset


def sha256_of(path: Path) -> str:
    """The file's SHA-256, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def training_data(root: str | Path, *, heads: bool, brain: str | None = None) -> dict[str, Any]:
    """The card's `training.data`: the dataset's sources and generator, and each training and validation file
    (with `heads`, the generated heads the sampler used instead of the training list; with `brain`, a
    brain-extraction model's synth.target, the full heads it was validated on instead of the validation list) with
    its sha256."""
    root = Path(root)
    dataset = read_dataset(root)
    files: list[dict[str, Any]] = []
    if heads:
        listed = dataset.get("heads") or {}
        for role, name in (listed.get("canvas") or {}).items():
            files.append({"split": "training", "role": f"template {role} on the head canvas", "file": name})
        for entry in listed.get("training") or []:
            files.append(
                {"split": "training", "role": "head tissue map", "file": entry["tissues"], "seed": entry["seed"]}
            )
    else:
        files += _pairs(dataset.get("training"), "training")
    if brain:  # a brain-extraction model is validated on the full heads' brain masks (synth.brain_validation_cases)
        roles = ("head", "stripped", *dict.fromkeys(BRAIN_REFERENCES[brain]))
        for entry in (dataset.get("fullhead") or {}).get("validation") or []:
            files += [{"split": "validation", "role": role, "file": entry[role]} for role in roles]
    else:
        files += _pairs(dataset.get("validation"), "validation")
    for entry in files:
        entry["sha256"] = sha256_of(root / entry["file"])
    return {
        "dataset": dataset.get("name"),
        "root": str(root),
        "sources": dataset.get("sources"),
        "generator": dataset.get("generator"),
        "head_generator": (dataset.get("heads") or {}).get("generator") if heads else None,
        "files": files,
    }


def _pairs(entries: Any, split: str) -> list[dict[str, Any]]:
    out = []
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        extra = {key: entry[key] for key in ("seed", "recipe") if key in entry}
        out += [{"split": split, "role": role, "file": entry[role], **extra} for role in ("image", "label")]
    return out
