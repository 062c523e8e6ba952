"""The words of each QC warning: what looks wrong, the number behind it, and what to do (docs/python.md lists them)."""

from __future__ import annotations

from collections.abc import Mapping

from ..card import QCSpec
from .measures import Measures
from .prior import best_flip, prior_array, prior_fits

Values = Mapping[str, float | None]

EMPTY = (
    "The model labelled nothing in this scan: it may not be a brain MRI, or not one the model can read. Check the "
    "file in a viewer; the segmentation is empty."
)


def ct(measures: Measures, values: Values, spec: QCSpec) -> str:
    return (
        f"This looks like a CT scan, not a T1-weighted MRI: {measures.air_fraction:.0%} of the voxels are below -500, "
        "as air is in Hounsfield units. The model segments T1-weighted MRI only, so this mask means nothing: "
        "segment a T1-weighted MRI instead."
    )


def noise(measures: Measures, values: Values, spec: QCSpec) -> str:
    typical = spec.limits["structure"].ok
    return (
        f"The image has almost no spatial structure (neighbouring voxels correlate {measures.structure:.2f}; MRI scans "
        f"give about {typical:.2f} or more): it looks like noise, not a scan, so this mask means nothing. Check that "
        "the right file was used and that it shows a head in a viewer."
    )


def contrast(measures: Measures, values: Values, spec: QCSpec) -> str:
    return (
        "The image's brightness does not follow a T1-weighted brain MRI (white matter brighter than grey matter, "
        "fluid dark): it may be a T2-weighted, FLAIR or other contrast, which the model was not trained on, so this "
        "mask is unreliable. Segment a T1-weighted scan."
    )


def skull_stripped(measures: Measures, values: Values, spec: QCSpec) -> str:
    volume = "" if measures.brain_ml is None else f" ({measures.brain_ml:.0f} mL of grey plus white matter here)"
    return (
        "The scan seems to include the skull and scalp, but this model was trained on skull-stripped brains only: it "
        f"labels tissue outside the brain as grey or white matter, so the mask and its volumes are wrong{volume}. "
        "Skull-strip the scan first (e.g. with SynthStrip or FSL BET) and segment the stripped image, or use a model "
        "trained on full-head scans."
    )


def orientation(measures: Measures, values: Values, spec: QCSpec) -> str:
    prior = prior_array(spec)
    fits = None if prior is None or measures.maps is None else prior_fits(measures.maps, prior)
    flip = "flipped" if fits is None else best_flip(fits)
    return (
        f"The head looks {flip} according to the file's orientation header: the labelled tissue fits a flipped "
        "brain better than an upright one, and the model may have mislabelled it. Check the header (open the file "
        "in a viewer that uses it, e.g. ITK-SNAP or fsleyes), fix the orientation and segment again."
    )


def cut_off(measures: Measures, values: Values, spec: QCSpec) -> str:
    side = f"{measures.cut_side} " if measures.cut_side else ""
    return (
        f"The brain is cut off at the {side}edge of the field of view ({measures.cut_fraction:.0%} of its largest "
        "cross-section lies on that edge): tissue beyond it is missing, so the volumes are lower bounds. Use a scan "
        "that covers the whole brain."
    )


def field_of_view(measures: Measures, values: Values, spec: QCSpec) -> str:
    typical = spec.limits["fov_fraction"].ok
    return (
        f"The brain fills only {measures.fov_fraction:.1%} of the field of view (brain scans: about {typical:.0%} or "
        "more): this may not be a head scan, or the head is a small part of a large one. Check the scan, or crop "
        "it to the head and segment again."
    )


def volume(measures: Measures, values: Values, spec: QCSpec) -> str:
    low, high = spec.limits["brain_ml_min"].warn, spec.limits["brain_ml_max"].warn
    size = measures.brain_ml or 0.0
    hint = "8×" if size > high else "1/8 of"
    return (
        f"Grey plus white matter measure {size:.0f} mL, outside the {low:.0f}–{high:.0f} mL plausible for a human "
        f"brain: the voxel size in the header is probably wrong (a 1 mm scan declared as "
        f"{'2' if size > high else '0.5'} mm gives {hint} the volume). Check the voxel size against the scanner's "
        "protocol and fix the header."
    )


def uncertainty(measures: Measures, values: Values, spec: QCSpec) -> str:
    typical = spec.limits["uncertainty"].ok
    return (
        f"The model is unsure of much of this segmentation (mean uncertainty {measures.uncertainty or 0:.2f} inside "
        f"the labelled tissue; validation scans: {typical:.2f} or less): the scan differs from those the model was "
        "trained on. Review the mask (e.g. with the uncertainty overlay) before using its volumes."
    )
