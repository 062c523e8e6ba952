"""The card's prior: where grey and white matter lie in an upright brain, on a coarse lattice over its bounding box
(closest-RAS). A prediction's own map (measures.layout_maps) is compared with it upright and flipped, and the image's
brightness is read against it (is white matter brighter than grey?)."""

from __future__ import annotations

import numpy as np

from ..card import QCSpec

# The flips a header error causes that the prior can tell apart (left-right is symmetric), by the axis they flip.
FLIPS = {"upside down (superior and inferior swapped)": 3, "mirrored front to back (anterior and posterior swapped)": 2}


def prior_array(spec: QCSpec) -> np.ndarray | None:
    """The card's prior as a `(2, N, N, N)` array (grey, white); None when the card has none."""
    if spec.prior is None:
        return None
    n = spec.prior_grid
    return np.asarray(spec.prior, dtype=np.float64).reshape(2, n, n, n)


def flip_margin(fits: dict[str, float]) -> float:
    """How much better the best flip fits than upright (> 0: a flipped brain fits better)."""
    return max(value for name, value in fits.items() if name != "upright") - fits["upright"]


def best_flip(fits: dict[str, float]) -> str:
    """The flip that fits best (a key of FLIPS)."""
    return max((name for name in fits if name != "upright"), key=lambda name: fits[name])


def prior_fits(maps: np.ndarray, prior: np.ndarray) -> dict[str, float]:
    """Correlation of a prediction's grey/white map (`maps[:2]`) with the `(2, N, N, N)` prior upright, upside down
    and mirrored front to back (the prior flipped along the inferior-superior or posterior-anterior axis)."""
    tissue = maps[:2].ravel()
    fits = {"upright": _correlation(tissue, prior.ravel())}
    for name, axis in FLIPS.items():
        fits[name] = _correlation(tissue, np.flip(prior, axis=axis).ravel())
    return fits


def t1_contrast(maps: np.ndarray, prior: np.ndarray) -> float:
    """How much brighter white matter is than grey matter: the intensity map fitted as a + b·grey + c·white over
    the prior's (in the orientation it fits best) cells, then (c − b) / (|c| + |b|): > 0 on a T1, < 0 on a T2."""
    fits = prior_fits(maps, prior)
    best = max(fits, key=lambda name: fits[name])
    if best != "upright":
        prior = np.flip(prior, axis=FLIPS[best])
    design = np.stack([np.ones(prior[0].size), prior[0].ravel(), prior[1].ravel()], axis=1)
    _, grey, white = np.linalg.lstsq(design, maps[2].ravel().astype(np.float64), rcond=None)[0]
    return float((white - grey) / (abs(white) + abs(grey) + 1e-6))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    spread = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / spread) if spread > 0 else 0.0
