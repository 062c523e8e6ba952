"""The review UI's look: the Gradio theme, the page's CSS and the script that runs once in the page."""

from __future__ import annotations

import gradio as gr

CSS = """
.gradio-container { max-width: 1520px !important; }
#app-header { padding: 6px 4px 2px; }
#app-header .brand { display: flex; align-items: center; gap: 14px; }
#app-header h1 { font-size: 1.45rem; margin: 0; font-weight: 650; letter-spacing: -0.01em; }
#app-header .sub { color: var(--body-text-color-subdued); font-size: 0.9rem; margin-top: 2px; }
#app-header .badge { display: inline-block; border-radius: 999px; padding: 1px 10px; font-size: 0.75rem;
  background: #fef3c7; color: #92400e; border: 1px solid #fcd34d; margin-left: 6px; }
.view-panel { background: #05070d; border-radius: 14px; padding: 8px !important; gap: 4px !important; }
.view-panel .block { background: #05070d !important; border-color: #1e293b !important; }
.view-panel label, .view-panel span { color: #cbd5e1 !important; }
.view-panel [data-testid="block-label"] { background: rgba(15, 23, 42, 0.85) !important;
  border-color: #334155 !important; }
.view-panel input[type="number"], .view-panel .tab-like-container { background: #0f172a !important;
  color: #e2e8f0 !important; border-color: #334155 !important; }
.view-panel .empty { color: #475569; }
/* Progress over the views: dark like them, not a white box in each panel. */
.view-panel [data-testid="status-tracker"] { background: #05070d !important; }
.view-panel [data-testid="status-tracker"] * { color: #cbd5e1 !important; }
.view-panel [data-testid="status-tracker"] .progress-bar-wrap { background: #1e293b !important;
  border-color: #334155 !important; }
#legend .legend { display: grid; gap: 6px; font-size: 0.88rem; padding: 4px 2px; }
#legend .legend-title { font-weight: 600; margin-top: 4px; color: var(--body-text-color-subdued);
  text-transform: uppercase; font-size: 0.72rem; letter-spacing: 0.06em; }
#legend .row { display: grid; grid-template-columns: 16px 1fr auto; align-items: center; gap: 8px; }
#legend .swatch { width: 14px; height: 14px; border-radius: 4px; border: 1px solid rgba(0,0,0,0.15); }
#legend .value { font-variant-numeric: tabular-nums; color: var(--body-text-color-subdued); }
#legend .ramp { height: 10px; border-radius: 5px;
  background: linear-gradient(90deg, #000004, #4a0c6b, #a52c60, #ed6925, #fcffa4); }
#legend .ramp-labels { display: flex; justify-content: space-between; font-size: 0.75rem;
  color: var(--body-text-color-subdued); }
#status { min-height: 2.2em; }
#qc-banner .qc-banner { border: 1px solid #f59e0b; border-left: 6px solid #d97706; background: #fffbeb;
  color: #78350f; border-radius: 10px; padding: 8px 14px; }
#qc-banner .qc-title { font-weight: 650; margin-bottom: 2px; }
#qc-banner ul { margin: 0; padding-left: 1.2em; }
#qc-banner li { margin: 2px 0; font-size: 0.92rem; }
#cursor .cursor { font-size: 0.88rem; font-variant-numeric: tabular-nums; color: var(--body-text-color-subdued);
  padding: 2px 4px; }
#cursor .cursor b { color: var(--body-text-color); font-weight: 600; }
#cursor .agree { color: #0f766e; }
#cursor .disagree { color: #b91c1c; font-weight: 600; }
#cursor .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 3px; margin: 0 4px 0 2px; }
.view-panel img { cursor: crosshair; }
/* Results are read-only: Gradio 6.31 lists them with a remove (×) button even in a non-interactive box. */
#downloads .label-clear-button, #mask-output .label-clear-button { display: none !important; }
/* Before the first segmentation the Mask box held a 236 px empty placeholder that pushed the legend off screen:
   one line says what will appear there instead. */
#mask-output .empty { min-height: 0 !important; height: auto !important; padding: 34px 12px 10px; gap: 8px;
  flex-direction: row; }
#mask-output .empty .icon { width: 16px; height: 16px; }
#mask-output .empty::after { content: "The mask (.nii.gz) appears here"; font-size: 0.85rem;
  color: var(--body-text-color-subdued); }
/* Whole file names: Gradio cuts them to "mni152… .gz" in the narrow sidebar. There the size goes below the name,
   and a name longer than the line wraps instead of losing its middle. */
#sidebar .file-preview tr.file { display: flex; flex-direction: column; align-items: flex-start; gap: 2px; }
#sidebar .file-preview td.filename { width: 100%; }
#sidebar .file-preview td.filename > span { display: none; }
#sidebar .file-preview td.filename::before { content: attr(aria-label); overflow-wrap: anywhere; }
/* Keyboard users see where they are: Gradio 6.31 draws no focus ring on sliders, radios and checkboxes. */
input[type="range"]:focus-visible, input[type="radio"]:focus-visible, input[type="checkbox"]:focus-visible,
button:focus-visible { outline: 2px solid #0d9488 !important; outline-offset: 2px; }
[role="tab"]:focus-visible { outline: 2px solid #0d9488 !important; outline-offset: -2px; }  /* tabs clip outside */
"""
# Run once in the page. The wheel over a view steps through its slices (one per wheel event, as image viewers do),
# through the view's own slider so that the server redraws it as for a slider move; the page does not scroll under
# the pointer then. And it names the views' click targets for keyboard and screen-reader users, leaving one tab stop
# per download (Gradio wraps its Download button in a link that is a second, unnamed one).
JS = """
() => {
  const planes = ["axial", "coronal", "sagittal"];
  document.addEventListener("wheel", (event) => {
    const plane = planes.find((name) => event.target.closest && event.target.closest(`#${name}-view`));
    const range = plane && document.querySelector(`#${plane}-slider input[type=range]`);
    if (!range || range.disabled || event.deltaY === 0) return;
    event.preventDefault();
    const value = Number(range.value) + (event.deltaY < 0 ? 1 : -1);
    if (value < Number(range.min) || value > Number(range.max)) return;
    range.value = String(value);
    range.dispatchEvent(new Event("input", { bubbles: true }));
  }, { passive: false });
  const name = () => {
    for (const plane of planes) {
      const target = document.querySelector(`#${plane}-view .image-container > button`);
      if (target && !target.hasAttribute("aria-label")) {
        const title = plane[0].toUpperCase() + plane.slice(1);
        target.setAttribute("aria-label", `${title} view: click a point to move the other two views there`);
      }
      for (const link of document.querySelectorAll(`#${plane}-view a.download-link`)) link.tabIndex = -1;
    }
  };
  new MutationObserver(name).observe(document.body, { childList: true, subtree: true });
  name();
}
"""


def theme() -> gr.themes.Base:
    """A calm slate/teal theme with locally bundled fonts (no request leaves the server)."""
    return gr.themes.Base(primary_hue="teal", neutral_hue="slate", radius_size="md")
