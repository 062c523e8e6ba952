"""Quality control on every prediction: `assess` measures what `predict` already has and judges it against the model
card's `qc` limits (`card.QCSpec`), giving a score in [0, 1] and plain-language warnings (`QC`).

- `measures`: the numbers (intensities, structure, volumes, field of view, the tissue's layout, uncertainty).
- `prior`: the card's map of an upright brain, and what a prediction's own map says against it.
- `checks`: each check's score and the verdict; `messages`: the warnings' words.

`python -m train calibrate-qc` chooses the limits and the prior on validation scans and writes them into the card.
"""

from __future__ import annotations

import numpy as np

from ..card import ModelCard
from ..io import Volume
from .checks import CHECKS, QC, judge
from .measures import MAP_GRID, Measures, measure

__all__ = ["CHECKS", "QC", "Measures", "assess", "tissue_classes"]

_GREY = {"grey_matter", "gray_matter", "gm"}
_WHITE = {"white_matter", "wm"}


def assess(
    volume: Volume,
    image: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    uncertainty: float | None,
    card: ModelCard,
    *,
    scan: np.ndarray | None = None,
) -> QC:
    """Judge one prediction (what `Segmenter.predict` calls once the mask is on the input grid).

    Args:
        volume: the input.
        image: the network's input, on the host (`geometry.prepare`'s array).
        labels: the network's labels on the prepared grid, on the host.
        mask: the final mask on the input grid.
        uncertainty: the mean uncertainty inference measured (`InferenceOutput.uncertainty`).
        card: the model card: its classes and its `qc` limits.
        scan: the whole scan prepared, when `image` is not (a chained model's tissue network sees the brain alone):
            whether the scan is noise is judged on it.
    """
    grid = card.qc.prior_grid or MAP_GRID
    measured = measure(volume, image, labels, mask, uncertainty, tissue_classes(card), grid=grid, scan=scan)
    return judge(measured, card.qc)


def tissue_classes(card: ModelCard) -> tuple[int, int] | None:
    """The (grey matter, white matter) class indices, by class name; None unless the model has both.

    The brain checks (CT, contrast, orientation, volume, field of view, skull-stripping) need them; the others
    (noise, cut-off, uncertainty) judge any model.
    """
    names = {c.name.lower().replace(" ", "_").replace("-", "_"): c.index for c in card.classes}
    grey = next((names[n] for n in _GREY if n in names), None)
    white = next((names[n] for n in _WHITE if n in names), None)
    return None if grey is None or white is None else (grey, white)
