"""What a run was trained and validated on: every file with its sha256, where it came from, generator and seeds."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data import FULL_HEAD_ROLES, Case, read_dataset


def sha256_of(path: Path) -> str:
    """The file's SHA-256, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def training_data(root: str | Path, *, heads: bool, validation: Sequence[Case], full_heads: bool) -> dict[str, Any]:
    """The card's `training.data`: the dataset's sources and generator, and each training file (with `heads`, the
    generated heads the sampler used instead of the training list) and the files of the `validation` cases the run
    measured (with `full_heads`, a brain-extraction model's: the full heads' files) with its sha256."""
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
    used = {path for case in validation for path in (case.image, case.label)}
    if full_heads:
        for entry in (dataset.get("fullhead") or {}).get("validation") or []:
            files += [
                {"split": "validation", "role": role, "file": entry[role]}
                for role in FULL_HEAD_ROLES
                if entry.get(role) and root / entry[role] in used
            ]
    else:
        measured = [e for e in dataset.get("validation") or [] if isinstance(e, dict) and root / e["image"] in used]
        files += _pairs(measured, "validation")
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
