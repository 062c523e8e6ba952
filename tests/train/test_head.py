"""The head generator: the brain stays the template's, everything it adds lies outside the brain, a seed fixes it."""

import numpy as np
import pytest

from train.head import (
    AIR,
    BONE,
    BRAIN,
    CORD,
    CSF,
    CSF_REACH_MM,
    DURA,
    FAT,
    MARROW,
    MUSCLE,
    SKIN,
    SOFT,
    TISSUES,
    VITREOUS,
    Brain,
    Canvas,
    _add_large_muscles,
    _brainstem_tip,
    brain_with_csf,
    generate_head,
    training_labels,
)
from train.mni152 import load_template, tissue_labels


def brain_of(t1, gm, wm) -> Brain:
    canvas = Canvas.around(t1.shape, t1.affine)
    labels = tissue_labels(np.asanyarray(gm.dataobj) / 255.0, np.asanyarray(wm.dataobj) / 255.0)
    return Brain.from_template(canvas, canvas.place(np.asanyarray(t1.dataobj)), canvas.place(labels))


@pytest.fixture(scope="module")
def tiny_brain(tiny_template):
    return brain_of(*load_template(tiny_template))


def test_labels_come_from_the_template_and_added_tissue_lies_outside_the_brain(tiny_brain):
    head = generate_head(tiny_brain, seed=0)
    inside = tiny_brain.mask
    assert np.array_equal(head[inside], tiny_brain.tissues[inside])
    assert not np.isin(head[~inside], BRAIN).any()
    labels = training_labels(head)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert np.array_equal(labels, training_labels(tiny_brain.tissues))
    assert {CSF, DURA, BONE, MARROW, SKIN} <= set(np.unique(head[~inside]))


def test_a_seed_fixes_the_head_and_another_seed_changes_it(tiny_brain):
    first, again, other = (generate_head(tiny_brain, seed) for seed in (3, 3, 4))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_the_layers_above_the_vertex_run_from_csf_to_skin_then_air(tiny_brain):
    head = generate_head(tiny_brain, seed=1)
    i, j = (n // 2 for n in head.shape[:2])
    column = head[i, j, :]
    top = int(np.flatnonzero(tiny_brain.mask[i, j, :])[-1])
    seen = [int(t) for k, t in enumerate(column[top + 1 :]) if k == 0 or t != column[top + k]]
    # Each layer may be thin enough to miss on one column, but never out of order.
    order = [CSF, DURA, BONE, MARROW, BONE, MUSCLE, FAT, SKIN, AIR]
    position = 0
    for tissue in seen:
        assert tissue in order[position:], f"{[TISSUES[t] for t in seen]} breaks the order"
        position = order.index(tissue, position)
    assert seen[0] == CSF and seen[-1] == AIR and SKIN in seen


def test_the_brain_with_its_csf_adds_the_csf_layer_and_nothing_else(tiny_brain):
    head = generate_head(tiny_brain, seed=2)
    mask = brain_with_csf(head, tiny_brain.distance)
    added = mask & ~tiny_brain.mask
    assert np.array_equal(mask[tiny_brain.mask], np.ones(int(tiny_brain.mask.sum()), dtype=bool))
    assert added.any() and (head[added] == CSF).all()
    assert (tiny_brain.distance[added] <= CSF_REACH_MM).all()
    layer = (head == CSF) & (tiny_brain.distance <= 3.5)  # the thickest generated layer: all of it is kept
    assert np.array_equal(added | ~layer, np.ones_like(added))


@pytest.mark.slow
def test_a_head_around_the_mni_template_has_eyes_a_cord_and_fits_its_canvas():
    brain = brain_of(*load_template())
    head = generate_head(brain, seed=0)
    present = set(np.unique(head))
    assert present == set(range(len(TISSUES)))
    assert {VITREOUS, CORD} <= present
    assert (head[:, :, -1] == AIR).all() and (head[0] == AIR).all() and (head[:, -1] == AIR).all()
    eyes = np.argwhere(head == VITREOUS)
    assert (eyes[:, 0] < head.shape[0] // 2).any() and (eyes[:, 0] > head.shape[0] // 2).any()  # two eyes
    assert brain.distance[head == VITREOUS].min() > 5  # clear of the brain
    # The neck reaches 64 mm below the template (a scanner's 256 mm field of view), with the large muscles a T1 can
    # show as bright as grey matter: the tongue in front of the spine, the posterior neck muscles behind it.
    assert np.flatnonzero(brain.mask.any(axis=(0, 1)))[0] == 64 and (head[:, :, 0] != AIR).any()
    muscles = np.full(head.shape, SOFT, dtype=np.uint8)
    _add_large_muscles(muscles, np.ones(head.shape, dtype=bool), brain, np.random.default_rng(0))
    _, y, z = brain.canvas.axes_mm()
    cord_y, tip_z = _brainstem_tip(brain)
    front = (muscles == MUSCLE) & (y > cord_y) & (z < tip_z)
    behind = (muscles == MUSCLE) & (y < cord_y - 10)
    assert front.sum() > 20_000 and behind.sum() > 2 * 20_000  # mm³: one tongue, two muscle masses
