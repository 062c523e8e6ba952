"""What one browser tab keeps between events (`Session`), and the typed values the handlers read from the page.

A `Session` lives in one `gr.State` per tab: the handlers change it in place and write it back, which restarts its
time-to-live. Gradio drops it (and `Session.close` deletes the review's files and lets go of its arrays) when it has
not changed for UNET3D_SESSION_TTL_S or when the tab closes (`sessions.py`). Anything a new feature must remember
across events for one user is a field here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..cases.store import CaseQuery
from .errors import NO_REVIEW, user_error
from .review import Review
from .sessions import SessionMemory

# A review (~70 MB for a 1 mm brain) is dropped after an hour without interaction (UNET3D_SESSION_TTL_S sets it at
# startup), or when its tab closes.
SESSION_TTL_S = 3600
WORKLIST_PAGE = 25
NO_CASE = "Open a case first: pick one in the Worklist tab, or segment a volume."


@dataclass(frozen=True)
class SegmentOptions:
    """The UI's segmentation options (the /segment API uses the defaults)."""

    uncertainty: bool = True
    tta: bool = False
    save_probabilities: bool = False


@dataclass(frozen=True)
class ViewInputs:
    """What the three views are drawn from, as the page's controls hold it.

    Attributes:
        indices: slice indices (axial, coronal, sagittal), as the sliders show them.
        window: width of the grey window (intensity units).
        level: centre of the grey window.
        opacity: overlay opacity in [0, 1].
        visible: names of the classes shown.
        overlay: the chosen overlay (a key of `rendering.OVERLAYS`).
        crosshair: whether the crosshair is drawn.
    """

    indices: tuple[int, int, int]
    window: float
    level: float
    opacity: float
    visible: tuple[str, ...]
    overlay: str
    crosshair: bool

    @property
    def point(self) -> tuple[int, int, int]:
        """The crosshair's voxel (x, y, z) in the review's closest-RAS arrays."""
        return point_at(self.indices)


def point_at(indices: tuple[int, int, int]) -> tuple[int, int, int]:
    """The voxel (x, y, z) where the slices (axial, coronal, sagittal) meet: axial slices z, coronal y, sagittal x."""
    axial, coronal, sagittal = (int(i) for i in indices)
    return sagittal, coronal, axial


def plane_indices(point: tuple[int, int, int]) -> tuple[int, int, int]:
    """Slice indices (axial, coronal, sagittal) through the voxel `point` (x, y, z): the inverse of `point_at`."""
    x, y, z = (int(v) for v in point)
    return z, y, x


@dataclass(frozen=True)
class OpenCase:
    """The case on screen, as this tab loaded it: verdicts are made from `version` (a newer one is refused).

    Attributes:
        id: the case id.
        version: the case's version when it was loaded, or when this tab last changed it.
        name: its name.
        position: its index in the worklist's order when it was opened from there (next/previous start from it).
    """

    id: int
    version: int
    name: str
    position: int | None = None


@dataclass(eq=False)  # a tab is itself: two sessions are never "equal"
class Session:
    """One browser tab: its review and what it needs to remember between events.

    Attributes:
        review: the review on screen (None before the first segmentation).
        options: the segmentation options ticked when Segment was last pressed.
        reference_owner: the uploaded volume the file in the reference box belongs to; None: whichever volume is
            segmented next (see `owner_of_reference`).
        redraws: how many times a handler asked for the views to be drawn again (see `redraw`).
        dicom_files: the files in the page's DICOM box when Segment was pressed (segmented when no volume is chosen;
            the /segment API takes one file, a .zip, instead).
        memory: the budget the review counts against, once the tab has reserved room in it (`reserve`).
        case: the stored case on screen (None before one is opened or stored).
        reviewer: the name typed in this tab (used when the server has no login).
        worklist: the worklist's filters, order and page.
    """

    review: Review | None = None
    options: SegmentOptions = field(default_factory=SegmentOptions)
    reference_owner: Path | None = None
    redraws: int = 0
    dicom_files: tuple[str, ...] = ()
    memory: SessionMemory | None = None
    case: OpenCase | None = None
    reviewer: str = ""
    worklist: CaseQuery = field(default_factory=lambda: CaseQuery(limit=WORKLIST_PAGE))

    def require_review(self) -> Review:
        """The review on screen.

        Raises:
            gr.Error: nothing has been segmented in this tab yet.
        """
        if self.review is None:
            raise user_error(NO_REVIEW)
        return self.review

    def reserve(self, memory: SessionMemory, voxels: int) -> None:
        """Hold room in `memory` for a review of `voxels` voxels, in place of this tab's current one.

        Raises:
            VolumeTooLargeError, ServiceBusyError: as `SessionMemory.reserve`.
        """
        memory.reserve(self, voxels)
        self.memory = memory

    def require_case(self) -> OpenCase:
        """The stored case on screen.

        Raises:
            gr.Error: no case is open in this tab.
        """
        if self.case is None:
            raise user_error(NO_CASE)
        return self.case

    def start(self, review: Review) -> None:
        """Show a new review, deleting the previous one's files."""
        previous, self.review = self.review, review
        if previous is not None and previous.workdir != review.workdir:
            previous.close()

    def redraw(self) -> int:
        """A new value for the page's redraw token (`Layout.redraw`): writing it there has the views drawn again."""
        self.redraws += 1
        if self.memory is not None:
            self.memory.touch(self)
        return self.redraws

    def owner_of_reference(self, chosen_volume: Path | None) -> Path | None:
        """The volume a reference mask uploaded now belongs to: the chosen volume (None before any is chosen).

        A reference uploaded before its volume was segmented (or while it is being segmented) waits in its box and is
        compared once that segmentation finishes; one uploaded with no other volume chosen goes to the review shown.
        """
        if self.review is not None and chosen_volume is None:
            return self.review.source
        return chosen_volume

    def close(self) -> None:
        """Delete the review's files and let go of its arrays (Gradio calls this when the session expires or its tab
        closes; whatever still refers to the session, e.g. Gradio's closed-session records, holds no review)."""
        review, self.review = self.review, None
        if review is not None:
            review.close()
        if self.memory is not None:
            self.memory.release(self)
