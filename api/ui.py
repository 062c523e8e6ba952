"""The Gradio Blocks review UI (layout and event wiring), mounted into the FastAPI app at /ui.

Named endpoints for gradio_client: `/segment` (a NIfTI file in; the mask file and the summary JSON out) and
`/segment_with_options` (also tta and probabilities; the probabilities file as a third output).
Every other event is private; a file path that was not uploaded through the page is refused with a message.
Callbacks live in `api/callbacks.py`, presentation in `api/panels.py`, the look (theme, CSS, page script) in
`api/styling.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.routing import Mount

from . import panels, styling, views
from .callbacks import ReviewBlocks, ReviewCallbacks, SegmentOptions, ViewInputs, user_error
from .cors import defer_mounted_cors
from .deps import key_matches
from .review import Review, agreement_table
from .service import SegmentationService

UI_PATH = "/ui"
EXAMPLES = Path(__file__).resolve().parent / "examples"
EXAMPLE_VOLUME = EXAMPLES / "mni152_t1.nii.gz"
# A review (~100 MB for a 1 mm brain) is dropped after an hour without interaction, or when its tab closes.
SESSION_TTL_S = 3600
NIFTI_TYPES = [".nii", ".gz"]
PLANE_NAMES = views.PLANES
PRIVATE: dict[str, Any] = {"api_visibility": "private"}
QUIET: dict[str, Any] = {**PRIVATE, "show_progress": "hidden", "trigger_mode": "always_last", "concurrency_limit": None}
# Shown by gradio_client's view_api() and the page's "Use via API" (the callback's docstring also names the state).
SEGMENT_API: dict[str, Any] = {
    "api_name": "segment",
    "api_description": "Segment a NIfTI volume (.nii / .nii.gz): returns the mask (.nii.gz, uint8, on the input's "
    "voxel grid) and the summary JSON (the fields of POST /v1/predict).",
}

SEGMENT_WITH_OPTIONS_API: dict[str, Any] = {
    "api_name": "segment_with_options",
    "api_description": "Segment a NIfTI volume with options: tta (test-time augmentation over flips, about 4× "
    "slower) and probabilities (also return the class probabilities, float32 (I, J, K, C) .nii.gz on the input's "
    "grid). Returns the mask, the summary JSON and the probabilities file (None unless asked for).",
}
VOLUME_API_HELP = (
    "A NIfTI volume (.nii or .nii.gz, 3D, or 4D with one frame). Send a local file with gradio_client's "
    "handle_file('t1.nii.gz'); the mask comes back on this volume's voxel grid."
)

Parts = dict[str, Any]


def _described_for_api(component: Any, description: str, example: Any = None) -> Any:
    """`component`, with the description (and example) that gradio_client's view_api() and the "Use via API" page
    show for it as an endpoint parameter: Gradio's own are a docstring of its data class (for a file: FileData's)
    or nothing, and for a file a PDF on GitHub as the example to copy.

    Set on the instance: a component subclass would make Gradio's metaclass write a `.pyi` stub beside this module.
    """
    as_input = component.api_info_as_input
    component.api_info_as_input = lambda: {**as_input(), "additional_description": description}
    if example is not None:
        component.example_payload = lambda: example
    return component


def build_ui(get_service: Callable[[], SegmentationService | None]) -> gr.Blocks:
    """The review UI; `get_service` returns the loaded service (None until the lifespan has loaded it)."""
    cb = ReviewCallbacks(get_service)
    with ReviewBlocks(title="unet3d · segmentation review", analytics_enabled=False, delete_cache=(900, 3600)) as demo:
        parts: Parts = {
            "options": gr.State(SegmentOptions()),
            "review": gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=_close_review),
            # The volume (Path) the file in the reference box belongs to; None: whichever is segmented next.
            "reference_owner": gr.State(None),
        }
        with gr.Sidebar(width=330, elem_id="sidebar"):
            parts |= _sidebar()
        parts["header"] = gr.HTML(panels.header_html(None), elem_id="app-header")
        parts["status"] = gr.Markdown(panels.WELCOME, elem_id="status")
        with gr.Tabs():
            with gr.Tab("Slices", id="slices"):
                parts |= _slices()
            with gr.Tab("Statistics", id="statistics"):
                parts |= _statistics()
            with gr.Tab("Agreement", id="agreement"):
                parts |= _agreement()
            with gr.Tab("3D surface", id="surface") as surface_tab:
                parts |= _surface()
            with gr.Tab("Downloads & summary", id="downloads"):
                parts["downloads"] = gr.File(
                    label="Files", file_count="multiple", interactive=False, elem_id="downloads"
                )
                parts["summary"] = gr.JSON(label="Summary", open=True, elem_id="summary")
        parts["surface_tab"] = surface_tab
        demo.load(lambda: panels.startup(get_service()), None, _pick(parts, panels.STARTUP_KEYS), **PRIVATE)
        _wire_segmentation(cb, parts)
        _wire_views(cb, parts)
    return demo


def _sidebar() -> Parts:
    with gr.Group():
        volume = _described_for_api(
            gr.File(label="Volume (.nii / .nii.gz)", file_types=NIFTI_TYPES, elem_id="volume-input"),
            VOLUME_API_HELP,
            # With a url, the API page writes the example as handle_file('t1.nii.gz'), the call to copy.
            example={"path": "t1.nii.gz", "url": "t1.nii.gz", "meta": {"_type": "gradio.FileData"}},
        )
        example = gr.Button("Try the MNI152 T1 example", size="sm", elem_id="example-btn")
    with gr.Accordion("Options", open=False, elem_id="options"):
        uncertainty = gr.Checkbox(True, label="Uncertainty map (voxel entropy)")
        tta = _described_for_api(
            gr.Checkbox(False, label="Test-time augmentation (flips, about 4× slower)"),
            "Average the prediction over flips along each axis (about 4× slower).",
        )
        keep_probs = _described_for_api(
            gr.Checkbox(False, label="Save class probabilities (.nii.gz, float32)"),
            "Also return the class probabilities: a float32 (I, J, K, C) .nii.gz on the volume's grid (the third "
            "output; None when false).",
        )
    run = gr.Button("Segment", variant="primary", elem_id="segment-btn")
    mask_file = gr.File(label="Mask", interactive=False, elem_id="mask-output")
    legend = gr.HTML(panels.legend_html(None), elem_id="legend")
    # The trigger and output of /segment_with_options, an endpoint for gradio_client only.
    api_only = gr.Button(visible=False)
    probabilities_file = gr.File(label="Probabilities", visible=False, interactive=False)
    return {"volume": volume, "example": example, "uncertainty": uncertainty, "tta": tta, "keep_probs": keep_probs,
            "run": run, "mask_file": mask_file, "legend": legend, "api_only": api_only,
            "probabilities_file": probabilities_file}  # fmt: skip


def _slices() -> Parts:
    parts: Parts = {}
    with gr.Row(equal_height=True):
        for plane in PLANE_NAMES:
            with gr.Column(min_width=240, elem_classes=["view-panel"]):
                # No placeholder: Gradio 6.31 shows it only in an upload area, never on a read-only image.
                parts[plane] = gr.Image(label=plane.capitalize(), type="filepath", interactive=False, height=380,
                                        buttons=["fullscreen", "download"], elem_id=f"{plane}-view")  # fmt: skip
                parts[f"{plane}_slider"] = gr.Slider(0, 1, value=0, step=1, label=f"{plane.capitalize()} slice",
                                                     buttons=[], interactive=False,
                                                     elem_id=f"{plane}-slider")  # fmt: skip
    parts["cursor"] = gr.HTML(panels.cursor_html(None, 0, 0, 0), elem_id="cursor")
    with gr.Row(elem_id="display-controls"):
        with gr.Column(scale=2, min_width=260):
            parts["overlay"] = gr.Radio(
                panels.OVERLAY_CHOICES,
                value="classes",
                label="Overlay",
                elem_id="overlay",
                info="Errors need a reference mask; uncertainty needs the uncertainty map.",
            )
            parts["shown"] = gr.CheckboxGroup([], label="Show classes", elem_id="class-toggle")
        with gr.Column(scale=1, min_width=200):
            # No ↺ buttons on these sliders: Gradio's resets to the construction value, not to this volume's, and
            # fires no event that redraws the views ("Auto window" below does both).
            parts["opacity"] = gr.Slider(0, 1, value=0.4, step=0.05, label="Opacity", buttons=[], elem_id="opacity")
            parts["crosshair"] = gr.Checkbox(
                True, label="Crosshair", elem_id="crosshair",
                info="Click a view to move the other two there; scroll over a view to step through its slices.",
            )  # fmt: skip
            parts["jump"] = gr.Button("Jump to the most uncertain slices", size="sm", elem_id="jump-btn")
        with gr.Column(scale=1, min_width=200):
            # Disabled until a volume is segmented: their ranges come from its intensities (panels.present).
            parts["window"] = gr.Slider(1, 100, value=100, label="Window width", buttons=[], interactive=False,
                                        elem_id="window")  # fmt: skip
            parts["level"] = gr.Slider(0, 100, value=50, label="Window level", buttons=[], interactive=False,
                                       elem_id="level")  # fmt: skip
            parts["auto_window"] = gr.Button("Auto window", size="sm", elem_id="auto-window")
    return parts


def _statistics() -> Parts:
    with gr.Row():
        # No `height` on plots with a colour legend: Gradio 6.31 clips the legend below a fixed-height chart.
        # min_width: on a narrow window the table goes below the plot instead of both being cut.
        class_plot = gr.BarPlot(x="class", y="volume (mL)", color="class", label="Volume per class", y_lim=[0, None],
                                x_title=" ", min_width=360, elem_id="class-histogram")  # fmt: skip
        class_table = gr.Dataframe(label="Classes", interactive=False, wrap=True, min_width=360, elem_id="class-table")
    intensity_plot = gr.LinePlot(x="intensity", y="voxels (%)", color="class", label="Intensity histogram per class",
                                 elem_id="intensity-histogram")  # fmt: skip
    return {"class_plot": class_plot, "class_table": class_table, "intensity_plot": intensity_plot}


def _agreement() -> Parts:
    reference = gr.File(label="Reference mask (same voxel grid as the volume)", file_types=NIFTI_TYPES,
                        elem_id="reference-input")  # fmt: skip
    agreement = gr.Dataframe(label="Dice and IoU per class", interactive=False, elem_id="agreement")
    iou_plot = gr.LinePlot(x="axial slice", y="IoU", color="class", y_lim=[0, 1], label="IoU along z (per axial slice)",
                           elem_id="iou-along-z")  # fmt: skip
    return {"reference": reference, "agreement": agreement, "iou_plot": iou_plot}


def _surface() -> Parts:
    surface_classes = gr.CheckboxGroup([], label="Surfaces", elem_id="surface-classes")
    surface = gr.Model3D(label="3D surface (decimated)", height=520, clear_color=(0.06, 0.09, 0.16, 1.0),
                         elem_id="surface")  # fmt: skip
    return {"surface_classes": surface_classes, "surface": surface}


def _wire_segmentation(cb: ReviewCallbacks, p: Parts) -> None:
    """Segment button and example button: store the options, run /segment, then present the new review."""

    def present(
        state: Review, opacity: float, shown: list[str], crosshair: bool, reference: Any, owner: Path | None,
        overlay: views.Overlay,
    ) -> list[Any]:  # fmt: skip
        return panels.present(state, cb, opacity, shown, crosshair, reference, owner, overlay)

    def segment_after(step: Any, visibility: dict[str, Any]) -> None:
        segmented = step.then(cb.segment, _pick(p, ("volume", "options", "review")),
                              _pick(p, ("mask_file", "summary", "review")), concurrency_limit=None,
                              show_progress_on=_pick(p, ("mask_file", *PLANE_NAMES)), **visibility)  # fmt: skip
        present_in = _pick(p, ("review", "opacity", "shown", "crosshair", "reference", "reference_owner", "overlay"))
        shown = segmented.success(present, present_in,
                                  _pick(p, panels.PRESENT_KEYS), **PRIVATE)  # fmt: skip
        shown.then(panels.surface_file, _pick(p, ("review", "surface_classes")), p["surface"],
                   show_progress="minimal", **PRIVATE)  # fmt: skip

    options_in = _pick(p, ("uncertainty", "tta", "keep_probs"))
    segment_after(p["run"].click(_store_options, options_in, p["options"], **PRIVATE), SEGMENT_API)
    loaded = p["example"].click(lambda: str(EXAMPLE_VOLUME), None, p["volume"], **PRIVATE)
    segment_after(loaded.then(_store_options, options_in, p["options"], **PRIVATE), PRIVATE)
    # /segment_with_options: the sidebar's TTA and probabilities boxes as its optional parameters (default off).
    p["api_only"].click(cb.segment_with_options, _pick(p, ("volume", "tta", "keep_probs", "review")),
                        _pick(p, ("mask_file", "summary", "probabilities_file", "review")), concurrency_limit=None,
                        **SEGMENT_WITH_OPTIONS_API)  # fmt: skip


def _wire_views(cb: ReviewCallbacks, p: Parts) -> None:
    """Slider and control moves re-render the three views from the cached arrays (the model never runs)."""
    controls = ("window", "level", "opacity", "shown", "overlay", "crosshair")
    sliders = tuple(f"{plane}_slider" for plane in PLANE_NAMES)
    view_in = _pick(p, ("review", *sliders, *controls))
    images = _pick(p, PLANE_NAMES)

    def render(state: Review | None, *values: Any) -> list[Any]:
        # Writing the state back restarts its time-to-live: it expires after inactivity, not mid-review.
        return [*cb.render(state, _view_inputs(values)), state]

    def compare(state: Review | None, volume: Any, reference: Any, *values: Any) -> list[Any]:
        owner = cb.reference_owner(state, volume)
        unchanged = [gr.skip()] * 6
        if reference and (state is None or owner != state.source):  # its volume is not segmented yet
            gr.Info(panels.reference_waits(owner))
            return [state, *unchanged, gr.skip(), owner]
        try:
            updated = cb.attach(state, reference)
        except gr.Error as refused:  # say why, and take the refused file out of the box (it was not used)
            gr.Warning(refused.message)
            return [state, *unchanged, None, None]
        overlay = "errors" if reference else "classes"
        rendered = cb.render(updated, _view_inputs((*values[:-1], overlay, values[-1])))
        tables = [agreement_table(updated), panels.iou_plot(updated)] if updated else [gr.skip(), gr.skip()]
        return [updated, *tables, overlay, *rendered, gr.skip(), owner if reference else None]

    def check_overlay(state: Review | None, overlay: str) -> str:
        """An overlay whose data is missing falls back to the classes, and the user is told why."""
        missing = panels.missing_overlay_data(state, overlay)
        if missing:
            gr.Warning(missing)
            return "classes"
        return overlay

    def jump(state: Review | None, *values: Any) -> list[Any]:
        target = cb.jump_target(state)
        rendered = cb.render(state, _view_inputs((*target, *values[:-1], "uncertainty", values[-1])))
        return [*target, "uncertainty", *rendered]

    def navigate_from(plane: views.Plane) -> Callable[..., list[Any]]:
        # Gradio passes the click only to a parameter it can place by position (no *args before it).
        def navigate(
            state: Review | None, axial: int, coronal: int, sagittal: int, window: float, level: float,
            opacity: float, shown: list[str], overlay: str, crosshair: bool, click: gr.SelectData,
        ) -> list[Any]:  # fmt: skip
            target = cb.navigate(state, plane, click.index, (axial, coronal, sagittal))
            rendered = cb.render(state, _view_inputs((*target, window, level, opacity, shown, overlay, crosshair)))
            return [*target, *rendered, state]

        return navigate

    for plane in PLANE_NAMES:  # a click on a view moves the other two to that point
        p[plane].select(navigate_from(plane), view_in, [*_pick(p, sliders), *images, p["review"]], **QUIET)
    triggers = [p[name].input for name in (*sliders, *controls)]
    gr.on(triggers, render, view_in, [*images, p["review"]], **QUIET)
    # The readout follows the crosshair wherever it is moved from, and a new mask or reference under it.
    cursor_on = [*(p[name].change for name in sliders), p["summary"].change, p["agreement"].change]
    gr.on(cursor_on, panels.cursor_html, _pick(p, ("review", *sliders)), p["cursor"], **QUIET)
    compare_in = _pick(
        p, ("review", "volume", "reference", *sliders, "window", "level", "opacity", "shown", "crosshair")
    )
    compare_out = _pick(p, ("review", "agreement", "iou_plot", "overlay", *PLANE_NAMES, "reference", "reference_owner"))
    for event in (p["reference"].upload, p["reference"].clear):
        event(compare, compare_in, compare_out, **PRIVATE)
    jump_in = _pick(p, ("review", "window", "level", "opacity", "shown", "crosshair"))
    p["jump"].click(jump, jump_in, [*_pick(p, sliders), p["overlay"], *images], **PRIVATE)

    def auto_window(state: Review | None, *values: Any) -> list[Any]:
        if state is None:
            raise user_error("Segment a volume first.")
        window, level = panels.auto_window(state)
        axial, coronal, sagittal, opacity, shown, overlay, crosshair = values
        inputs = (axial, coronal, sagittal, window, level, opacity, shown, overlay, crosshair)
        return [window, level, *cb.render(state, _view_inputs(inputs))]

    auto_in = _pick(p, ("review", *sliders, "opacity", "shown", "overlay", "crosshair"))
    p["auto_window"].click(auto_window, auto_in, [p["window"], p["level"], *images], **PRIVATE)
    p["overlay"].input(check_overlay, _pick(p, ("review", "overlay")), p["overlay"], **QUIET)
    for event in (p["surface_tab"].select, p["surface_classes"].input):
        event(panels.surface_file, _pick(p, ("review", "surface_classes")), p["surface"], **PRIVATE)


def _pick(parts: Parts, names: tuple[str, ...]) -> list[Any]:
    return [parts[name] for name in names]


def _store_options(uncertainty: bool, tta: bool, keep_probabilities: bool) -> SegmentOptions:
    return SegmentOptions(uncertainty=bool(uncertainty), tta=bool(tta), save_probabilities=bool(keep_probabilities))


def _close_review(value: Any) -> None:
    if isinstance(value, Review):
        value.close()


def _view_inputs(values: tuple[Any, ...]) -> ViewInputs:
    axial, coronal, sagittal, window, level, opacity, shown, overlay, crosshair = values
    return ViewInputs(
        indices=(int(axial), int(coronal), int(sagittal)),
        window=float(window),
        level=float(level),
        opacity=float(opacity),
        visible=tuple(shown or ()),
        overlay=overlay or "classes",
        crosshair=bool(crosshair),
    )


def mount_ui(app: FastAPI, blocks: gr.Blocks) -> None:
    """Mount the UI at /ui with analytics and run history off, then close two holes of mounted Gradio apps.

    Gradio 6.31 skips its "was this file uploaded?" check unless `has_launched` is set, which mount_gradio_app
    never does: without the flag a raw API call naming /etc/passwd reaches the handlers (notes/stack-verified.md).
    And its CORS middleware allows every origin with credentials on any non-localhost host: it is removed, so
    UNET3D_ALLOW_ORIGINS (closed by default) governs /ui as it governs the API.
    """
    blocks.queue(max_size=64, default_concurrency_limit=None)
    gr.mount_gradio_app(
        app,
        blocks,
        path=UI_PATH,
        footer_links=["api"],
        run_history=False,
        allowed_paths=[str(EXAMPLES)],
        show_error=False,
        ssr_mode=False,
        theme=styling.theme(),
        css=styling.CSS,
        js=styling.JS,
    )
    blocks.has_launched = True
    defer_mounted_cors(mounted_app(app))


def mounted_app(app: FastAPI) -> Any:
    """The Gradio app mounted at /ui (a gradio.routes.App).

    Raises:
        RuntimeError: nothing is mounted there.
    """
    for route in app.routes:
        if isinstance(route, Mount) and route.path == UI_PATH:
            return route.app
    raise RuntimeError(f"no app is mounted at {UI_PATH}")


def require_key_for_ui(app: FastAPI, blocks: gr.Blocks, api_key: SecretStr | None) -> None:
    """With UNET3D_API_KEY set, the UI asks for it too, on Gradio's login page (any user name, the key as password).

    Gradio checks its login cookie on every route that runs or reads something (upload, call, queue, file=,
    config, info); gradio_client logs in with `Client(url, auth=(name, key))`. The key is only known once the
    settings are read (at startup), after the UI was mounted, hence the late assignment to Gradio's app.
    """
    key = api_key
    mounted_app(app).auth = None if key is None else lambda _username, password: key_matches(password, key)
    blocks.auth_message = "This unet3d server is protected by its API key: any user name, the key as password."
