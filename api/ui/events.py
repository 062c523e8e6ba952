"""Every handler of the review UI (`ReviewEvents`) and the wiring of the page's events to them.

A handler reads the components it names as `{component: value}` (its inputs are a set) and returns
`{component: new value}` for the components it changes; the others keep their values. The tab's `Session` is one of
its inputs when it needs the review, and one of its outputs when it changes it (writing it back also restarts its
time-to-live). Three handlers are named endpoints for gradio_client, with positional parameters: `/segment`,
`/segment_with_options` and `/segment_dicom`. The service is reached through a getter, never a module global.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from ..cases.service import CaseService
from ..service import SegmentationService
from .caseevents import CaseEvents, wire_cases
from .endpoints import SEGMENT_API, SEGMENT_DICOM_API, SEGMENT_WITH_OPTIONS_API
from .errors import chosen_path, user_error
from .figures import agreement_table, class_table, class_volumes, intensity_histograms, iou_plot, plot_colors, pretty
from .layout import Layout
from .markup import cursor_html, header_html, legend_html, qc_banner_html, reference_waits, status_markdown
from .rendering import OVERLAYS, PLANE_AXIS, PLANES, Plane, missing_overlay_data, shown_overlay
from .review import PROBABILITIES_SUFFIX, SEG_SUFFIX, Review
from .segmentation import segment_upload, with_reference
from .sessions import SessionMemory, close_tab
from .state import SegmentOptions, Session, ViewInputs, point_at
from .surface import surface_file
from .views import auto_window, clicked_indices, initial_indices, most_uncertain_indices, window_range, write_views

Values = dict[Any, Any]  # a handler's inputs: component → value
Changes = dict[Any, Any]  # what it changes: component → new value (or a gr.update)

EXAMPLE_VOLUME = Path(__file__).resolve().parents[1] / "examples" / "mni152_t1.nii.gz"
# A generated full head (skull, scalp, neck; api/examples/NOTICE.md): what a scanner gives before skull-stripping.
EXAMPLE_HEAD = EXAMPLE_VOLUME.parent / "fullhead_t1.nii.gz"
PRIVATE: dict[str, Any] = {"api_visibility": "private"}
QUIET: dict[str, Any] = {**PRIVATE, "show_progress": "hidden", "trigger_mode": "always_last", "concurrency_limit": None}


class ReviewEvents:
    """The UI's event handlers, bound to a getter of the loaded service and to the page's `Layout`."""

    def __init__(
        self,
        get_service: Callable[[], SegmentationService | None],
        ui: Layout,
        get_cases: Callable[[], CaseService | None] = lambda: None,
        memory: SessionMemory | None = None,
    ) -> None:
        self._get_service = get_service
        self.ui = ui
        self.memory = memory or SessionMemory()
        self._blocks: gr.Blocks | None = None
        self.cases = CaseEvents(self, get_cases)

    def loaded_service(self) -> SegmentationService | None:
        """The service, or None while the model loads."""
        return self._get_service()

    def service(self) -> SegmentationService:
        service = self._get_service()
        if service is None:
            raise user_error("The model is still loading: try again in a few seconds.")
        return service

    def wire(self, demo: gr.Blocks) -> None:
        """Connect the page's events to the handlers (inside `demo`'s context)."""
        ui = self.ui
        plots = [ui.class_plot, ui.intensity_plot, ui.iou_plot]
        demo.load(self.startup, None, [ui.header, ui.legend, ui.shown, ui.surface_classes, *plots], **PRIVATE)
        self._blocks = demo
        demo.unload(self.closed)
        self._wire_segmentation()
        self._wire_views()
        compare_out = [ui.session, ui.agreement, ui.iou_plot, ui.overlay, ui.redraw, ui.reference]
        for event in (ui.reference.upload, ui.reference.clear):
            event(self.compare, {ui.session, ui.volume, ui.reference}, compare_out, **PRIVATE)
        for event in (ui.surface_tab.select, ui.surface_classes.input):
            event(self.surface, {ui.session, ui.surface_classes}, ui.surface, **PRIVATE)
        wire_cases(self.cases, demo)

    # Page load and close, segmentation

    def closed(self, request: gr.Request) -> None:
        """A tab has closed (Gradio's `unload`): its review goes now, not when Gradio would drop it (an hour later)."""
        close_tab(self._blocks, request)

    def startup(self) -> Changes:
        """Header, legend, class toggles and plot colours from the model card, when a page loads."""
        ui, service = self.ui, self._get_service()
        if service is None:
            return {ui.header: header_html(None), ui.legend: legend_html(None)}
        card = service.segmenter.card
        # Foreground classes only: background is what the overlay leaves uncovered.
        foreground = [c.name for c in card.classes if c.index != 0]
        choices = [(pretty(name), name) for name in foreground]
        colors = plot_colors(card.classes)
        return {
            ui.header: header_html(service.info()),
            ui.legend: legend_html(card.classes),
            ui.shown: gr.CheckboxGroup(choices=choices, value=foreground),
            ui.surface_classes: gr.CheckboxGroup(choices=choices, value=foreground),
            ui.class_plot: gr.BarPlot(color_map=colors, sort=[pretty(name) for name in foreground]),
            ui.intensity_plot: gr.LinePlot(color_map=colors),
            ui.iou_plot: gr.LinePlot(color_map=colors),
        }

    def example(self) -> tuple[str, None]:
        """The MNI152 T1 example, as the chosen volume (and no DICOM files)."""
        return str(EXAMPLE_VOLUME), None

    def empty(self) -> None:
        """Nothing: one upload box is emptied when the other is filled, so that Segment has one thing to read."""

    def example_head(self) -> tuple[str, None]:
        """The full-head T1 example, as the chosen volume (and no DICOM files)."""
        return str(EXAMPLE_HEAD), None

    def store_options(self, values: Values) -> Changes:
        """Remember the ticked options for the segmentation that follows."""
        ui, session = self.ui, values[self.ui.session]
        session.options = SegmentOptions(uncertainty=bool(values[ui.uncertainty]), tta=bool(values[ui.tta]),
                                          save_probabilities=bool(values[ui.keep_probabilities]))  # fmt: skip
        session.dicom_files = tuple(values[ui.dicom_files] or ())
        return {ui.session: session}

    def segment(
        self, volume: Any, session: Session, progress: Any = gr.Progress()
    ) -> tuple[str, dict[str, Any], Session]:
        """Segment the chosen volume: returns the mask file, the summary JSON and the session showing its review
        (kept as a stored case when the review database is open)."""
        review = self._segment(volume, session, session.options, progress)
        return str(review.files[0]), review.summary, session

    def segment_dicom(
        self, volume: Any, session: Session, progress: Any = gr.Progress()
    ) -> tuple[str, str, dict[str, Any], Session]:
        """Segment a zipped DICOM series: returns the DICOM SEG, the mask file, the summary JSON and the session."""
        review = self._segment(volume, session, SegmentOptions(uncertainty=False), progress)
        seg = [str(f) for f in review.files if f.name.endswith(SEG_SUFFIX)]
        if not seg:
            raise user_error("This upload is not DICOM, so it has no DICOM SEG: send a zipped DICOM series.")
        return seg[0], str(review.files[0]), review.summary, session

    def segment_with_options(
        self, volume: Any, tta: bool, probabilities: bool, session: Session, progress: Any = gr.Progress()
    ) -> tuple[str, dict[str, Any], str | None, Session]:
        """Segment with test-time augmentation and/or the class probabilities: returns the mask file, the summary
        JSON, the probabilities file (None unless asked for) and the session showing the review."""
        options = SegmentOptions(uncertainty=False, tta=bool(tta), save_probabilities=bool(probabilities))
        review = self._segment(volume, session, options, progress)
        saved = [str(f) for f in review.files if f.name.endswith(PROBABILITIES_SUFFIX)]
        return str(review.files[0]), review.summary, saved[0] if saved else None, session

    def present(self, values: Values) -> Changes:
        """Everything shown after a segmentation, from the session's new review.

        A reference mask in its box that belongs to this volume (`Session.reference_owner`) is compared with the new
        mask and the views open on the errors; a reference that belongs to another volume is taken out of the box.
        Otherwise the chosen overlay stays, unless the new review lacks its data.
        """
        ui, session = self.ui, values[self.ui.session]
        compared = self._compare_waiting_reference(session, values[ui.reference])
        review = session.require_review()
        banner = qc_banner_html(review.summary)
        changes: Changes = {
            ui.status: status_markdown(review),
            ui.qc_banner: gr.HTML(banner, visible=bool(banner)),
            ui.legend: legend_html(review.classes, [c["volume_ml"] for c in review.summary["classes"]]),
            **self._opened_sliders(review),
            ui.overlay: "errors" if compared else shown_overlay(review.layers, values[ui.overlay] or "classes"),
            ui.redraw: session.redraw(),
            ui.class_plot: class_volumes(review),
            ui.class_table: class_table(review),
            ui.intensity_plot: intensity_histograms(review),
            ui.downloads: [str(path) for path in review.files],
            ui.agreement: agreement_table(review),
            ui.iou_plot: iou_plot(review),
            ui.session: session,
        }
        if not compared:  # a reference of another volume, or a refused one, leaves its box
            changes[ui.reference] = None
        return changes

    # The three views

    def render(self, values: Values) -> Changes:
        """The three views for the controls' values (nothing before the first segmentation).

        The only handler that draws them: it runs whenever a control moves or another handler changes `Layout.redraw`
        (after moving controls), one run at a time per page and always with the latest values (`QUIET`), so a late
        picture never replaces a newer one.
        """
        ui, session = self.ui, values[self.ui.session]
        if session.review is None:
            return {ui.session: session}
        return {**self._pictures(session.review, self._view_inputs(values)), ui.session: session}

    def navigate_from(self, plane: Plane) -> Callable[[Values, gr.SelectData], Changes]:
        """The handler of a click on the view of `plane`: the other two views move to the voxel clicked."""

        def navigate(values: Values, click: gr.SelectData) -> Changes:
            ui, session = self.ui, values[self.ui.session]
            review = session.require_review()
            if not (isinstance(click.index, list | tuple) and len(click.index) == 2):  # not [column, row]
                return {ui.session: session}
            indices = clicked_indices(review, plane, click.index, self._indices(values))
            return {**self._sliders(indices), ui.redraw: session.redraw(), ui.session: session}

        return navigate

    def check_overlay(self, values: Values) -> Any:
        """An overlay whose data is missing falls back to the classes, and the user is told why."""
        review = values[self.ui.session].review
        missing = None if review is None else missing_overlay_data(review.layers, values[self.ui.overlay])
        if missing is None:
            return gr.skip()
        gr.Warning(missing)
        return "classes"

    def jump(self, values: Values) -> Changes:
        """Move the views to the most uncertain slices and show the uncertainty."""
        ui, session = self.ui, values[self.ui.session]
        review = session.require_review()
        target = most_uncertain_indices(review)
        if target is None:
            raise user_error(OVERLAYS["uncertainty"].missing)
        return {**self._sliders(target), ui.overlay: "uncertainty", ui.redraw: session.redraw(), ui.session: session}

    def auto_window(self, values: Values) -> Changes:
        """Bring back this volume's default grey window, and redraw the views with it."""
        ui, session = self.ui, values[self.ui.session]
        width, level = auto_window(session.require_review())
        return {ui.window: width, ui.level: level, ui.redraw: session.redraw(), ui.session: session}

    def cursor(self, values: Values) -> str:
        """The readout of the voxel under the crosshair."""
        return cursor_html(values[self.ui.session].review, point_at(self._indices(values)))

    # Reference and surface

    def compare(self, values: Values) -> Changes:
        """A reference mask uploaded (or removed): compare it with the review shown, or keep it for its own volume."""
        ui, session, reference = self.ui, values[self.ui.session], values[self.ui.reference]
        owner = session.owner_of_reference(chosen_path(values[ui.volume]))
        review = session.review
        if reference and (review is None or owner != review.source):  # its volume is not segmented yet
            gr.Info(reference_waits(owner))
            session.reference_owner = owner
            return {ui.session: session}
        session.reference_owner = None
        if review is None:  # emptied before anything was segmented
            return {ui.session: session, ui.overlay: "classes"}
        try:
            review = with_reference(self.service(), review, reference)
        except gr.Error as refused:  # say why, and take the refused file out of the box (it was not used)
            gr.Warning(refused.message)
            return {ui.session: session, ui.reference: None}
        session.review, session.reference_owner = review, owner if reference else None
        return {ui.session: session, ui.agreement: agreement_table(review), ui.iou_plot: iou_plot(review),
                ui.overlay: "errors" if reference else "classes", ui.redraw: session.redraw()}  # fmt: skip

    def surface(self, values: Values) -> str | None:
        """The 3D surface of the chosen classes."""
        return surface_file(values[self.ui.session].review, values[self.ui.surface_classes])

    # Wiring

    def _wire_segmentation(self) -> None:
        """Segment button and example buttons: store the options, run /segment, then present the new review."""
        ui = self.ui
        options: set[Any] = {ui.session, ui.uncertainty, ui.tta, ui.keep_probabilities, ui.dicom_files}
        pressed = ui.segment.click(self.store_options, options, ui.session, **PRIVATE)
        self._segment_then_present(pressed, SEGMENT_API)
        ui.volume.upload(self.empty, None, ui.dicom_files, **PRIVATE)
        ui.dicom_files.upload(self.empty, None, ui.volume, **PRIVATE)
        for button, chosen in ((ui.example, self.example), (ui.example_head, self.example_head)):
            loaded = button.click(chosen, None, [ui.volume, ui.dicom_files], **PRIVATE)
            self._segment_then_present(loaded.then(self.store_options, options, ui.session, **PRIVATE), PRIVATE)
        # /segment_with_options: the sidebar's TTA and probabilities boxes as its optional parameters (default off).
        ui.api_only.click(self.segment_with_options, [ui.volume, ui.tta, ui.keep_probabilities, ui.session],
                          [ui.mask_file, ui.summary, ui.probabilities_file, ui.session], concurrency_limit=None,
                          **SEGMENT_WITH_OPTIONS_API)  # fmt: skip
        ui.api_only.click(self.segment_dicom, [ui.volume, ui.session], [ui.seg_file, ui.mask_file, ui.summary,
                          ui.session], concurrency_limit=None, **SEGMENT_DICOM_API)  # fmt: skip

    def _segment_then_present(self, step: Any, visibility: dict[str, Any]) -> None:
        ui, images = self.ui, list(self.ui.images.values())
        outputs = [ui.mask_file, ui.summary, ui.session]
        progress_on = [ui.mask_file, *images]
        segmented = step.then(self.segment, [ui.volume, ui.session], outputs, concurrency_limit=None,
                              show_progress_on=progress_on, **visibility)  # fmt: skip
        self.then_present(segmented, then=self.cases.then_show_case)

    def then_present(self, step: Any, then: Callable[[Any], Any] | None = None) -> None:
        """After `step` succeeds, show the session's review in every tab (`present`), run `then` (another step of
        the chain), and draw the 3D surface last (it takes longest)."""
        ui = self.ui
        present_in = {ui.session, ui.reference, ui.overlay}
        present_out = [ui.status, ui.qc_banner, ui.legend, *ui.sliders.values(), ui.window, ui.level, ui.overlay,
                       ui.redraw, ui.class_plot, ui.class_table, ui.intensity_plot, ui.downloads, ui.agreement,
                       ui.iou_plot, ui.reference, ui.session]  # fmt: skip
        shown = step.success(self.present, present_in, present_out, **PRIVATE)
        if then is not None:
            shown = then(shown)
        shown.then(self.surface, {ui.session, ui.surface_classes}, ui.surface, show_progress="minimal", **PRIVATE)

    def _wire_views(self) -> None:
        """Slider and control moves re-render the three views from the cached arrays (the model never runs)."""
        ui, sliders = self.ui, list(self.ui.sliders.values())
        moved = [*(s.input for s in sliders), ui.window.input, ui.level.input, ui.opacity.input, ui.shown.input,
                 ui.overlay.input, ui.crosshair.input]  # fmt: skip
        drawn_from = {ui.session, *sliders, ui.window, ui.level, ui.opacity, ui.shown, ui.overlay, ui.crosshair}
        gr.on([*moved, ui.redraw.change], self.render, drawn_from, [*ui.images.values(), ui.session], **QUIET)
        for plane, image in ui.images.items():  # a click on a view moves the other two there
            image.select(self.navigate_from(plane), {ui.session, *sliders}, [*sliders, ui.redraw, ui.session], **QUIET)
        # The readout follows the crosshair wherever it is moved from, and a new mask or reference under it.
        cursor_on = [*(s.change for s in sliders), ui.summary.change, ui.agreement.change]
        gr.on(cursor_on, self.cursor, {ui.session, *sliders}, ui.cursor, **QUIET)
        ui.overlay.input(self.check_overlay, {ui.session, ui.overlay}, ui.overlay, **QUIET)
        ui.jump.click(self.jump, {ui.session}, [*sliders, ui.overlay, ui.redraw, ui.session], **PRIVATE)
        ui.auto_window.click(self.auto_window, {ui.session}, [ui.window, ui.level, ui.redraw, ui.session], **PRIVATE)

    # Helpers

    def _segment(self, volume: Any, session: Session, options: SegmentOptions, progress: Any) -> Review:
        """Segment `volume` into the tab's new review, its memory held in the UI's budget: room for the new review
        beside the one shown while it is made, then for the new one alone. The review is kept as a stored case when
        the review database is open."""
        shown = 0 if session.review is None else session.review.layers.image.size
        try:
            review, prediction = segment_upload(self.service(), volume, options, progress, session.dicom_files,
                                    reserve=lambda voxels: session.reserve(self.memory, voxels + shown))  # fmt: skip
        except BaseException:
            if session.memory is not None:
                session.reserve(self.memory, shown)  # smaller than what it held: never waits
            raise
        review = self.cases.keep(session, review, prediction)
        session.start(review)
        session.reserve(self.memory, review.layers.image.size)
        return review

    def _indices(self, values: Values) -> tuple[int, int, int]:
        axial, coronal, sagittal = (int(values[self.ui.sliders[plane]]) for plane in PLANES)
        return axial, coronal, sagittal

    def _view_inputs(self, values: Values) -> ViewInputs:
        ui = self.ui
        return ViewInputs(
            indices=self._indices(values),
            window=float(values[ui.window]),
            level=float(values[ui.level]),
            opacity=float(values[ui.opacity]),
            visible=tuple(values[ui.shown] or ()),
            overlay=values[ui.overlay] or "classes",
            crosshair=bool(values[ui.crosshair]),
        )

    def _opened_sliders(self, review: Review) -> Changes:
        """The sliders for a new review, enabled: through the foreground's centre, on the default window."""
        ui, window = self.ui, window_range(review)
        width, level = auto_window(review)
        changes: Changes = {}
        for plane, index in zip(PLANES, initial_indices(review), strict=True):
            last = review.layers.shape[PLANE_AXIS[plane]] - 1
            changes[ui.sliders[plane]] = gr.Slider(minimum=0, maximum=last, value=index, interactive=True)
        changes[ui.window] = gr.Slider(minimum=window.step, maximum=window.widest, value=width, step=window.step,
                                       interactive=True)  # fmt: skip
        changes[ui.level] = gr.Slider(minimum=window.lowest, maximum=window.highest, value=level, step=window.step,
                                      interactive=True)  # fmt: skip
        return changes

    def _pictures(self, review: Review, inputs: ViewInputs) -> Changes:
        paths = write_views(review, inputs)
        return {self.ui.images[plane]: path for plane, path in zip(PLANES, paths, strict=True)}

    def _sliders(self, indices: tuple[int, int, int]) -> Changes:
        return {self.ui.sliders[plane]: index for plane, index in zip(PLANES, indices, strict=True)}

    def _compare_waiting_reference(self, session: Session, reference: Any) -> bool:
        """Compare the session's new review with the reference in the box if it belongs to that volume; whether it
        was compared."""
        review = session.require_review()
        compared = False
        if reference and session.reference_owner in (None, review.source):
            try:
                session.review, compared = with_reference(self.service(), review, reference), True
            except gr.Error as refused:  # say why; the box is emptied (the file was not used)
                gr.Warning(refused.message)
        session.reference_owner = review.source if compared else None
        return compared
