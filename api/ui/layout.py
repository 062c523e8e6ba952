"""The page's components and where they sit: the sidebar, the header, and one tab per panel. No behaviour here.

`build_layout()` creates them inside the current `gr.Blocks` and returns a `Layout` that names each one, so that
`events.py` wires them by name. The elem_ids are what the CSS (`theme.py`), the page script and the browser test use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from . import markup
from .caselayout import CaseLayout, case_bar_section, compare_section, review_api_section, viewer_tab, worklist_tab
from .rendering import OVERLAYS, PLANES, Plane
from .state import SESSION_TTL_S, Session

NIFTI_TYPES = [".nii", ".gz"]
VOLUME_TYPES = [*NIFTI_TYPES, ".zip", ".dcm"]  # a DICOM series: zipped (a .dcm alone only if it holds the volume)
VOLUME_API_HELP = (
    "A NIfTI volume (.nii or .nii.gz, 3D, or 4D with one frame), or a DICOM series as a .zip. Send a local file with "
    "gradio_client's handle_file('t1.nii.gz'); the mask comes back on this volume's voxel grid."
)


@dataclass(frozen=True, eq=False)
class Layout:
    """Every component of the page, by name (see `build_layout` for what each shows)."""

    session: gr.State
    # Sidebar
    volume: gr.File
    dicom_files: gr.File
    example: gr.Button
    example_head: gr.Button
    uncertainty: gr.Checkbox
    tta: gr.Checkbox
    keep_probabilities: gr.Checkbox
    segment: gr.Button
    mask_file: gr.File
    legend: gr.HTML
    api_only: gr.Button
    probabilities_file: gr.File
    seg_file: gr.File
    # Above the tabs
    header: gr.HTML
    status: gr.Markdown
    qc_banner: gr.HTML
    # Slices
    images: dict[Plane, gr.Image]
    sliders: dict[Plane, gr.Slider]
    redraw: gr.State
    cursor: gr.HTML
    overlay: gr.Radio
    shown: gr.CheckboxGroup
    opacity: gr.Slider
    crosshair: gr.Checkbox
    jump: gr.Button
    window: gr.Slider
    level: gr.Slider
    auto_window: gr.Button
    # Statistics
    class_plot: gr.BarPlot
    class_table: gr.Dataframe
    intensity_plot: gr.LinePlot
    # Agreement
    reference: gr.File
    agreement: gr.Dataframe
    iou_plot: gr.LinePlot
    # 3D surface
    surface_tab: gr.Tab
    surface_classes: gr.CheckboxGroup
    surface: gr.Model3D
    # Downloads & summary
    downloads: gr.File
    summary: gr.JSON
    # The tabs, and the review of stored cases (case bar, Worklist and Viewer tabs, revision comparison, /review)
    tabs: gr.Tabs
    cases: CaseLayout


def build_layout() -> Layout:
    """Create the page's components inside the current `gr.Blocks`."""
    parts: dict[str, Any] = {"session": gr.State(Session(), time_to_live=SESSION_TTL_S, delete_callback=Session.close)}
    with gr.Sidebar(width=330, elem_id="sidebar"):
        parts |= _sidebar()
    parts["header"] = gr.HTML(markup.header_html(None), elem_id="app-header")
    parts["status"] = gr.Markdown(markup.WELCOME, elem_id="status")
    parts["qc_banner"] = gr.HTML("", visible=False, elem_id="qc-banner")  # the prediction's QC warnings, if any
    review = case_bar_section()
    with gr.Tabs(elem_id="tabs") as tabs:
        with gr.Tab("Slices", id="slices"):
            parts |= _slices()
        with gr.Tab("Viewer", id="viewer"):
            review |= viewer_tab()
        with gr.Tab("Worklist", id="worklist"):
            review |= worklist_tab()
        with gr.Tab("Statistics", id="statistics"):
            parts |= _statistics()
        with gr.Tab("Agreement", id="agreement"):
            review |= compare_section()
            parts |= _agreement()
        with gr.Tab("3D surface", id="surface") as surface_tab:
            parts |= _surface()
        with gr.Tab("Downloads & summary", id="downloads"):
            parts["downloads"] = gr.File(label="Files", file_count="multiple", interactive=False, elem_id="downloads")
            parts["summary"] = gr.JSON(label="Summary", open=True, elem_id="summary")
    review |= review_api_section()
    return Layout(surface_tab=surface_tab, tabs=tabs, cases=CaseLayout(**review), **parts)


def _sidebar() -> dict[str, Any]:
    with gr.Group():
        volume = _described_for_api(
            gr.File(label="Volume (.nii / .nii.gz, or a DICOM .zip)", file_types=VOLUME_TYPES, elem_id="volume-input"),
            VOLUME_API_HELP,
            # With a url, the API page writes the example as handle_file('t1.nii.gz'), the call to copy.
            example={"path": "t1.nii.gz", "url": "t1.nii.gz", "meta": {"_type": "gradio.FileData"}},
        )
        # Several files in one box: the page's own upload of a series (the /segment API takes one file: a .zip).
        dicom_files = gr.File(label="…or the DICOM files of one series", file_count="multiple", height=150,
                              elem_id="dicom-input")  # fmt: skip
        example = gr.Button("Try the MNI152 T1 example", size="sm", elem_id="example-btn")
        example_head = gr.Button("Try a full-head T1", size="sm", elem_id="example-head-btn")
    with gr.Accordion("Options", open=False, elem_id="options"):
        uncertainty = gr.Checkbox(True, label="Uncertainty map (voxel entropy)")
        tta = _described_for_api(
            gr.Checkbox(False, label="Test-time augmentation (flips, about 4× slower)"),
            "Average the prediction over flips along each axis (about 4× slower).",
        )
        keep_probabilities = _described_for_api(
            gr.Checkbox(False, label="Save class probabilities (.nii.gz, float32)"),
            "Also return the class probabilities: a float32 (I, J, K, C) .nii.gz on the volume's grid (the third "
            "output; None when false).",
        )
    segment = gr.Button("Segment", variant="primary", elem_id="segment-btn")
    mask_file = gr.File(label="Mask", interactive=False, elem_id="mask-output")
    legend = gr.HTML(markup.legend_html(None), elem_id="legend")
    # The trigger and outputs of /segment_with_options and /segment_dicom, endpoints for gradio_client only.
    api_only = gr.Button(visible=False)
    probabilities_file = gr.File(label="Probabilities", visible=False, interactive=False)
    seg_file = gr.File(label="DICOM SEG", visible=False, interactive=False)
    return {"volume": volume, "dicom_files": dicom_files, "example": example, "example_head": example_head,
            "uncertainty": uncertainty, "tta": tta,
            "keep_probabilities": keep_probabilities, "segment": segment, "mask_file": mask_file, "legend": legend,
            "api_only": api_only, "probabilities_file": probabilities_file, "seg_file": seg_file}  # fmt: skip


def _slices() -> dict[str, Any]:
    images, sliders = {}, {}
    with gr.Row(equal_height=True):
        for plane in PLANES:
            with gr.Column(min_width=240, elem_classes=["view-panel"]):
                # No placeholder: Gradio 6.31 shows it only in an upload area, never on a read-only image.
                images[plane] = gr.Image(label=plane.capitalize(), type="filepath", interactive=False, height=380,
                                         buttons=["fullscreen", "download"], elem_id=f"{plane}-view")  # fmt: skip
                sliders[plane] = gr.Slider(0, 1, value=0, step=1, label=f"{plane.capitalize()} slice", buttons=[],
                                           interactive=False, elem_id=f"{plane}-slider")  # fmt: skip
    # Handlers that move the controls change this token, and its change draws the views (events.ReviewEvents.render).
    parts: dict[str, Any] = {"images": images, "sliders": sliders, "redraw": gr.State(0)}
    parts["cursor"] = gr.HTML(markup.cursor_html(None, (0, 0, 0)), elem_id="cursor")
    with gr.Row(elem_id="display-controls"):
        with gr.Column(scale=2, min_width=260):
            parts["overlay"] = gr.Radio(
                [(kind.label, name) for name, kind in OVERLAYS.items()],
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
            # Disabled until a volume is segmented: their ranges come from its intensities (events.present).
            parts["window"] = gr.Slider(1, 100, value=100, label="Window width", buttons=[], interactive=False,
                                        elem_id="window")  # fmt: skip
            parts["level"] = gr.Slider(0, 100, value=50, label="Window level", buttons=[], interactive=False,
                                       elem_id="level")  # fmt: skip
            parts["auto_window"] = gr.Button("Auto window", size="sm", elem_id="auto-window")
    return parts


def _statistics() -> dict[str, Any]:
    with gr.Row():
        # No `height` on plots with a colour legend: Gradio 6.31 clips the legend below a fixed-height chart.
        # min_width: on a narrow window the table goes below the plot instead of both being cut.
        class_plot = gr.BarPlot(x="class", y="volume (mL)", color="class", label="Volume per class", y_lim=[0, None],
                                x_title=" ", min_width=360, elem_id="class-histogram")  # fmt: skip
        class_table = gr.Dataframe(label="Classes", interactive=False, wrap=True, min_width=360, elem_id="class-table")
    intensity_plot = gr.LinePlot(x="intensity", y="voxels (%)", color="class", label="Intensity histogram per class",
                                 elem_id="intensity-histogram")  # fmt: skip
    return {"class_plot": class_plot, "class_table": class_table, "intensity_plot": intensity_plot}


def _agreement() -> dict[str, Any]:
    reference = gr.File(label="Reference mask (same voxel grid as the volume)", file_types=NIFTI_TYPES,
                        elem_id="reference-input")  # fmt: skip
    agreement = gr.Dataframe(label="Dice and IoU per class", interactive=False, elem_id="agreement")
    iou_plot = gr.LinePlot(x="axial slice", y="IoU", color="class", y_lim=[0, 1], label="IoU along z (per axial slice)",
                           elem_id="iou-along-z")  # fmt: skip
    return {"reference": reference, "agreement": agreement, "iou_plot": iou_plot}


def _surface() -> dict[str, Any]:
    surface_classes = gr.CheckboxGroup([], label="Surfaces", elem_id="surface-classes")
    surface = gr.Model3D(label="3D surface (decimated)", height=520, clear_color=(0.06, 0.09, 0.16, 1.0),
                         elem_id="surface")  # fmt: skip
    return {"surface_classes": surface_classes, "surface": surface}


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
