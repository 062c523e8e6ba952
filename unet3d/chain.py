"""A chained model's second stage: the input restricted to the brain the first stage found, and the results too.

`Segmenter` (segmenter.py) runs the first stage (`Segmenter.brain`) and calls these around the tissue network.
"""

from __future__ import annotations

import torch

from .card import ModelCard
from .device import to_device
from .errors import InvalidVolumeError
from .geometry import Prepared, prepare
from .io import Volume

NO_BRAIN = (
    "the brain-extraction stage found no brain in this volume (none, or too little to normalise its intensities): it "
    "does not look like a T1-weighted MRI of a head. Check that the right file was used and that it shows a head in a "
    "viewer; if the head is a small part of a much larger field of view, crop the scan to the head and segment again"
)


def prepare_brain(
    volume: Volume, staged: torch.Tensor, brain: torch.Tensor, card: ModelCard, device: torch.device
) -> Prepared:
    """The volume with everything outside `brain` (bool, input grid) set to 0, prepared for the tissue network.

    Raises:
        InvalidVolumeError: the brain is empty, or too small for the card's intensity percentiles to span a range.
    """
    try:
        return prepare(volume, card, device, staged=to_device(staged, device) * brain)
    except InvalidVolumeError as e:
        raise InvalidVolumeError(NO_BRAIN) from e


def inside(
    brain: torch.Tensor, mask: torch.Tensor, probabilities: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Labels and probabilities restricted to the brain: background everywhere else."""
    mask = mask * brain
    if probabilities is not None:
        probabilities = probabilities * brain
        probabilities[0] = torch.where(brain, probabilities[0], 1.0)
    return mask, probabilities
