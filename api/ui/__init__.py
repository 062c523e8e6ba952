"""The review UI: a Gradio Blocks app, mounted into the FastAPI app at /ui (`api.main` uses the names below).

One noun per module:

- `app`: `build_ui` (layout + events), `mount_ui`, `configure_ui` and `require_key_for_ui` (at startup),
  `upload_folder` (Gradio's cache, for the temp quota and the start-up sweep), `UI_PATH`.
- `sessions`: the tabs' memory budget, and letting go of a closed tab's data.
- `layout`: the components and where they sit, no behaviour; `Layout` names each one.
- `events`: every handler (`ReviewEvents`) and the wiring of the page's events to them; the gradio_client endpoints
  `/segment`, `/segment_with_options` and `/segment_dicom`.
- `endpoints`: the names and descriptions gradio_client sees for `/segment`, `/segment_with_options` and
  `/segment_dicom`.
- `state`: what a browser tab keeps between events (`Session`) and the typed values handlers read (`ViewInputs`,
  `SegmentOptions`).
- `segmentation`: the service calls for an uploaded file (segment a volume into a review, compare a reference).
- `review`: one segmentation's cached arrays, files, reference comparison and crosshair readout (plain numpy).
- `rendering`: one slice picture from those arrays, and the overlays (`OVERLAYS`).
- `views`: the page's three views: control values to PNG files, a click back to slice indices, the window sliders.
  Only `ReviewEvents.render` draws them; a handler that moves the controls asks for a redraw (`Session.redraw`).
- `figures`: the plots' and tables' data frames.  `markup`: the page's HTML and Markdown.
- `surface`: the 3D surface (.glb).  `theme`: theme, CSS, page script.  `errors`: how the UI refuses (`gr.Error`).

The review of stored cases (issue 19), beside the single-scan review above:

- `caselayout`: its components (case bar, Worklist and Viewer tabs, revision comparison, `/review`'s hidden inputs),
  kept in `Layout.cases`.  `caseevents`: their handlers (`CaseEvents`) and wiring; `reviewapi`: gradio_client's
  `/review`.  `worklist`: the worklist's query, table, case bar and revision list (plain functions).
- `casereview`: a fresh segmentation becomes a case; a stored case becomes a `Review` (so every tab shows it).
- `viewer`: the browser viewer (NiiVue, `static/viewer.js`, `static/viewer.css`): its markup, what it is told
  about a case, its assets.  `bundle`: where NiiVue is installed and how (npm, or the lock's tarball).
- `casefiles`: the routes inside the mount that the viewer reads and writes (volume, masks, a saved correction,
  reviews.csv), behind the UI's login.  `identity`: the login modes and the name a verdict is recorded under.

Adding an overlay: one entry in `rendering.OVERLAYS` (its label, its drawing function beside it, and — when it draws
data a review may lack — the `Layers` field it needs and what to tell the user without it). The Overlay control, the
fallback to the classes and its warning follow from that entry. New data for it: a `Layers` field, filled in
`review.start_review`. A legend entry, if it needs one: `markup.legend_html`.

Adding a panel (a tab, or controls in one):
1. `layout.py`: its components, in a `_<panel>()` section called from `build_layout`, each a field of `Layout`.
2. `events.py`: its handlers, as `ReviewEvents` methods wired in `ReviewEvents.wire`. A handler takes its inputs as
   a set (it receives `{component: value}`) and returns `{component: new value}` for what it changes; one that moves
   the view controls also returns `{ui.redraw: session.redraw()}` rather than drawing the views itself.
3. What it must remember for a tab across events: a field of `state.Session`. Its plots and tables: `figures.py`;
   its HTML: `markup.py`; its CSS: `theme.py`.
4. Tests: its handlers without a browser (tests/api/test_ui_events.py), and a step in tests/api/test_ui_browser.py.
"""

from .app import UI_PATH, build_ui, configure_ui, mount_ui, require_key_for_ui, upload_folder

__all__ = ["UI_PATH", "build_ui", "configure_ui", "mount_ui", "require_key_for_ui", "upload_folder"]
