"""Evaluation report: JSON metrics and the seed's figures (IoU per class, IoU along z, predictions, errors)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.figure import Figure

from unet3d import Segmenter
from unet3d.geometry import canonical_orientation, canonical_spacing, to_canonical
from unet3d.metrics import evaluate, mean_of
from unet3d.options import Mode

from .data import Case, DatasetError, cases, labelled_splits, load_pair, read_dataset
from .errors import ComparisonError

View = tuple[Case, tuple[float, float, float], np.ndarray, np.ndarray, np.ndarray]


def evaluate_model(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    split: str = "test",
    device: str = "auto",
    limit: int | None = None,
    mode: Mode = "auto",
) -> dict[str, Any]:
    """Segment every case of `split`, write report.json and PNG figures to `out`; returns the report."""
    out = Path(out)
    selected = cases(data, split)[:limit] if limit else cases(data, split)
    if not selected:
        available = ", ".join(f"{name} ({count})" for name, count in labelled_splits(data).items()) or "none"
        raise DatasetError(
            f"{Path(data) / 'dataset.json'} has no labelled cases in split {split!r} (labelled splits: {available}): "
            "choose one with --split"
        )
    out.mkdir(parents=True, exist_ok=True)
    segmenter = Segmenter.from_pretrained(model, device=device)
    card = segmenter.card
    rows: list[dict[str, Any]] = []
    views: list[View] = []
    for case in selected:
        image, label = load_pair(case, card.num_classes)
        started = time.perf_counter()
        prediction = segmenter.predict(image, mode=mode)
        seconds = time.perf_counter() - started
        reference = np.rint(label.data).astype(np.uint8)
        metrics = evaluate(
            prediction.mask,
            reference,
            num_classes=card.num_classes,
            spacing_mm=image.spacing_mm,
            affine=image.affine,
            class_names=card.class_names(),
        )
        rows.append(
            {
                "case": case.name,
                "seconds": round(seconds, 3),
                "mode": prediction.mode,
                "shape": list(image.shape),
                "spacing_mm": [round(s, 3) for s in image.spacing_mm],
                **metrics,
            }
        )
        orientation = canonical_orientation(image)
        spacing = canonical_spacing(image, orientation)
        image_c, reference_c, mask_c = (to_canonical(a, orientation) for a in (image.data, reference, prediction.mask))
        views.append((case, spacing, image_c, reference_c, mask_c))
    report = _summarise(rows, card.class_names(), data, split, segmenter.info())
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    _plot_iou(rows, card.class_names(), out / "iou_per_class.png")
    _plot_iou_z(rows, card.class_names(), out / "iou_along_z.png")
    _plot_grid(views, card, out / "predictions.png", errors=False)
    _plot_grid(views, card, out / "error_overlays.png", errors=True)
    return report


def compare_with_reference(report: dict[str, Any], reference: str | Path, *, tolerance: float) -> dict[str, Any]:
    """Mean Dice per class against a reference model's card, over the cases both were measured on.

    A case where a class has no Dice in either evaluation (absent from prediction and reference) is left out of
    that class's means; a class with no such case left is left out of `classes`.

    The reference is a model directory whose model.yaml holds `metrics.<split>.per_case_dice` (written by
    `train evaluate --update-card`); when both have the generated heads' consistency figures, `generated_heads`
    compares those too. `within_tolerance` is true when no figure differs by more than `tolerance`.
    """
    path = Path(reference) / "model.yaml"
    if not path.is_file():
        raise ComparisonError(f"{path} not found: --compare takes a model directory with a model.yaml")
    split = report["dataset"]["split"]
    measured = (yaml.safe_load(path.read_text(encoding="utf-8")).get("metrics") or {}).get(split)
    if not measured or "per_case_dice" not in measured:
        raise ComparisonError(
            f"{path} has no per-case Dice for the {split} split: measure it with "
            f"`python -m train evaluate --model {reference} --data DIR --out DIR --split {split} --update-card`"
        )
    if measured["measured_on"]["name"] != report["dataset"]["name"]:
        raise ComparisonError(
            f"the reference was measured on {measured['measured_on']['name']!r}, this evaluation on "
            f"{report['dataset']['name']!r}: compare on the same dataset"
        )
    ours = {row["case"]: {c["name"]: c["dice"] for c in row["classes"][1:]} for row in report["cases"]}
    theirs = measured["per_case_dice"]
    common = [case for case in ours if case in theirs]
    if not common:
        raise ComparisonError(f"no case of this evaluation appears in {path}'s per-case Dice")
    classes = {}
    for name in report["mean"]:
        # A Dice of None: the class is absent from that case's prediction and reference; such cases say nothing.
        pairs = [(ours[c][name], theirs[c][name]) for c in common if None not in (ours[c][name], theirs[c][name])]
        if not pairs:
            continue
        this, that = (float(np.mean(values)) for values in zip(*pairs, strict=True))
        classes[name] = {"reference": round(that, 4), "this": round(this, 4), "difference": round(this - that, 4)}
    heads = _compare_heads(report, measured)
    differences = [c["difference"] for c in classes.values()] + [f["difference"] for f in heads.values()]
    return {
        "reference": str(reference),
        "cases": common,
        "tolerance": tolerance,
        "classes": classes,
        **({"generated_heads": heads} if heads else {}),
        "within_tolerance": all(abs(d) <= tolerance for d in differences),
    }


def _compare_heads(report: dict[str, Any], measured: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The generated heads' mean agreement per class and mean outside fraction, when both evaluations have them.

    These are the figures a chain's brain stage decides (the skull-stripped test cases hardly see it), so a re-run
    of that stage is compared on them too, with the same tolerance.
    """
    ours = report.get("consistency", {}).get("generated_heads")
    theirs = (measured.get("consistency") or {}).get("generated_heads")
    if not ours or not theirs:
        return {}
    pairs = {f"agreement_dice_{name}": (ours["agreement_dice"][name]["mean"], figures["mean"])
             for name, figures in theirs["agreement_dice"].items() if name in ours["agreement_dice"]}  # fmt: skip
    pairs["outside_fraction"] = (ours["outside_fraction"]["mean"], theirs["outside_fraction"]["mean"])
    return {
        name: {"reference": round(that, 5), "this": round(this, 5), "difference": round(this - that, 5)}
        for name, (this, that) in pairs.items()
    }


def _summarise(
    rows: list[dict[str, Any]], names: list[str], data: str | Path, split: str, info: dict[str, Any]
) -> dict[str, Any]:
    per_class = {}
    for index, name in enumerate(names):
        if index == 0:
            continue
        per_class[name] = {
            metric: _rounded_mean([r["classes"][index][metric] for r in rows]) for metric in ("dice", "iou", "hd95_mm")
        }
    dataset = read_dataset(data)
    return {
        "model": {"id": info["id"], "revision": info["revision"], "sha256": info["sha256"]},
        "dataset": {
            "name": dataset.get("name"),
            "split": split,
            "cases": [r["case"] for r in rows],
            "generator": dataset.get("generator"),
        },
        "mean": per_class,
        "mean_dice": _rounded_mean([r["mean_dice"] for r in rows]),
        "mean_iou": _rounded_mean([r["mean_iou"] for r in rows]),
        "seconds_per_case": round(float(np.mean([r["seconds"] for r in rows])), 3),
        "cases": [{k: v for k, v in r.items() if k != "iou_along_last_axis"} for r in rows],
        "iou_along_last_axis": {r["case"]: r["iou_along_last_axis"] for r in rows},
    }


def _rounded_mean(values: list[float | None]) -> float | None:
    """Mean over the cases where the value is defined (None: class absent from both masks), to 4 decimals."""
    mean = mean_of(values)
    return None if mean is None else round(mean, 4)


def _plot_iou(rows: list[dict[str, Any]], names: list[str], path: Path) -> None:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for index, name in enumerate(names[1:], start=1):
        values = [iou for r in rows if (iou := r["classes"][index]["iou"]) is not None]
        if not values:
            continue
        ax.bar(index, np.mean(values), color=f"C{index}", alpha=0.7, label=name)
        ax.scatter([index] * len(values), values, color="k", s=10, zorder=3)
    ax.set_xticks(range(1, len(names)), names[1:])
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU (bars: mean, dots: cases)")
    ax.set_title("IoU per class (background excluded)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_iou_z(rows: list[dict[str, Any]], names: list[str], path: Path) -> None:
    fig = Figure(figsize=(5 * (len(names) - 1), 3.5))
    axes = fig.subplots(1, len(names) - 1, squeeze=False)
    for column, name in enumerate(names[1:]):
        ax = axes[0, column]
        for row in rows:
            values = np.array([np.nan if v is None else v for v in row["iou_along_last_axis"][name]], dtype=float)
            ax.plot(np.linspace(0, 1, len(values)), values, lw=0.8, label=row["case"])
        ax.set_title(f"{name}: IoU along the last voxel axis")
        ax.set_xlabel("relative slice position")
        ax.set_ylim(0, 1)
    axes[0, -1].legend(fontsize=6, loc="lower center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_grid(views: list[View], card: Any, path: Path, *, errors: bool) -> None:
    shown = views[:6]
    columns = 2 if errors else 3
    fig = Figure(figsize=(3.2 * columns, 3.2 * len(shown)))
    axes = fig.subplots(len(shown), columns, squeeze=False)
    colors = np.array([[int(c.color[i : i + 2], 16) / 255 for i in (1, 3, 5)] for c in card.classes])
    for row, (case, spacing, image, reference, prediction) in enumerate(shown):
        z = int(np.argmax((reference > 0).sum(axis=(0, 1))))
        slice_image = np.rot90(image[:, :, z])
        lo, hi = np.percentile(slice_image, (1, 99))
        grey = np.clip((slice_image - lo) / max(hi - lo, 1e-6), 0, 1)
        ref, pred = np.rot90(reference[:, :, z]), np.rot90(prediction[:, :, z])
        if errors:
            panels = [("image", grey, None), ("errors: red wrong tissue, blue missed", grey, _error_overlay(ref, pred))]
        else:
            panels = [("image", grey, None), ("reference", grey, colors[ref]), ("prediction", grey, colors[pred])]
        for column, (title, base, overlay) in enumerate(panels):
            ax = axes[row, column]
            # rot90 puts axis J on rows and axis I on columns: aspect = row spacing / column spacing.
            aspect = spacing[1] / spacing[0]
            ax.imshow(base, cmap="gray", aspect=aspect)
            if overlay is not None:
                shown_mask = overlay.sum(-1) > 0 if errors else (ref if title == "reference" else pred) > 0
                ax.imshow(overlay, alpha=0.5 * shown_mask.astype(float), aspect=aspect)
            ax.set_title(f"{case.name}\n{title}" if column == 0 else title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _error_overlay(reference: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """RGB image: red where a foreground class was predicted wrongly (FP), blue where one was missed (FN)."""
    overlay = np.zeros((*reference.shape, 3))
    wrong = reference != prediction
    overlay[wrong & (prediction > 0)] = (1, 0, 0)
    overlay[wrong & (prediction == 0)] = (0, 0.3, 1)
    return overlay
