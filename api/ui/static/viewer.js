// The review UI's viewer: NiiVue (WebGL) in the page, fed the open case's volume and latest mask revision.
// Everything after loading runs in the browser: slice scrolling, window/level, overlay opacity, crosshairs kept in
// sync across the three views, the 3D render, and corrections drawn at the volume's own voxel grid. Only Save talks
// to the server (POST case-files/{id}/masks with If-Match); the page's Python side is told through `trigger`.
// Keyboard shortcuts of the review (verdicts, next/previous case, tools, undo/redo) are handled here too.
(() => {
  "use strict";
  const BUNDLE = "viewer-assets/niivue.umd.js";
  const TOOLS = { navigate: null, paint: { filled: false }, fill: { filled: true }, erase: { filled: false } };
  // Keys of the review, clicked on the page's buttons (their elem_ids, see api/ui/layout.py).
  const KEY_BUTTONS = { a: "verdict-accepted", n: "verdict-needs_correction", r: "verdict-rejected",
    j: "case-next", k: "case-prev" };
  const KEY_TOOLS = { v: "navigate", b: "paint", f: "fill", e: "erase" };
  const state = {
    nv: null, root: null, trigger: null, payload: null, loaded: null, loading: null,
    shadow: null, baseline: null, undo: [], redo: [], tool: "navigate", label: 1,
  };

  const $ = (selector) => state.root && state.root.querySelector(selector);

  function say(text, kind = "info") {
    const box = $(".nv-message");
    if (!box) return;
    box.textContent = text || "";
    box.dataset.kind = kind;
    box.hidden = !text;
  }

  function loadBundle() {
    if (window.niivue) return Promise.resolve(window.niivue);
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = BUNDLE;
      script.onload = () => (window.niivue ? resolve(window.niivue) : reject(new Error("no niivue")));
      script.onerror = () => reject(new Error("missing"));
      document.head.appendChild(script);
    });
  }

  // ---- Corrections: a history of strokes as voxel differences, for undo and redo ----

  function changedSince(reference) {
    const bitmap = state.nv.drawBitmap;
    let count = 0;
    for (let i = 0; i < bitmap.length; i++) if (bitmap[i] !== reference[i]) count++;
    return count;
  }

  function recordStroke() {
    const bitmap = state.nv.drawBitmap;
    const shadow = state.shadow;
    if (!bitmap || !shadow || bitmap.length !== shadow.length) return;
    const where = [];
    for (let i = 0; i < bitmap.length; i++) if (bitmap[i] !== shadow[i]) where.push(i);
    if (!where.length) return;
    const index = Uint32Array.from(where);
    const before = new Uint8Array(index.length);
    const after = new Uint8Array(index.length);
    index.forEach((voxel, n) => { before[n] = shadow[voxel]; after[n] = bitmap[voxel]; shadow[voxel] = bitmap[voxel]; });
    state.undo.push({ index, before, after });
    state.redo = [];
    showChanges();
  }

  function replay(from, to, values) {
    const step = from.pop();
    if (!step) return;
    const bitmap = state.nv.drawBitmap;
    step.index.forEach((voxel, n) => { bitmap[voxel] = step[values][n]; state.shadow[voxel] = step[values][n]; });
    to.push(step);
    state.nv.refreshDrawing(true);
    showChanges();
  }

  const undo = () => state.nv && replay(state.undo, state.redo, "before");
  const redo = () => state.nv && replay(state.redo, state.undo, "after");

  function showChanges() {
    const changed = state.baseline ? changedSince(state.baseline) : 0;
    const status = $(".nv-changes");
    if (status) {
      status.dataset.changed = String(changed);
      status.textContent = changed ? `Unsaved correction: ${changed.toLocaleString("en")} voxels changed` : "";
    }
    $(".nv-undo").disabled = !state.undo.length;
    $(".nv-redo").disabled = !state.redo.length;
    $(".nv-save").disabled = !changed || !state.payload;
  }

  // ---- Tools ----

  function useTool(tool) {
    if (!(tool in TOOLS)) return;
    state.tool = tool;
    for (const input of state.root.querySelectorAll("input[name=nv-tool]")) input.checked = input.value === tool;
    if (!state.nv) return;
    const pen = TOOLS[tool];
    state.nv.setDrawingEnabled(pen !== null);
    if (pen) state.nv.setPenValue(tool === "erase" ? 0 : state.label, pen.filled);
  }

  function setWindow() {
    const volume = state.nv && state.nv.volumes[0];
    if (!volume) return;
    const low = Number($(".nv-low").value);
    const high = Number($(".nv-high").value);
    volume.cal_min = Math.min(low, high - 1e-6);
    volume.cal_max = Math.max(high, low + 1e-6);
    state.nv.updateGLVolume();
  }

  function fitWindow(window) {
    const volume = state.nv.volumes[0];
    const [lowest, highest] = [volume.global_min, volume.global_max];
    const step = (highest - lowest) / 500 || 1;
    for (const [selector, value] of [[".nv-low", window[0]], [".nv-high", window[1]]]) {
      const slider = $(selector);
      Object.assign(slider, { min: lowest, max: highest, step });
      slider.value = value;
    }
    setWindow();
  }

  function classLut(classes) {
    const lut = { R: [], G: [], B: [], A: [], I: [], labels: [] };
    for (const item of classes) {
      const hex = item.color.replace("#", "");
      lut.R.push(parseInt(hex.slice(0, 2), 16));
      lut.G.push(parseInt(hex.slice(2, 4), 16));
      lut.B.push(parseInt(hex.slice(4, 6), 16));
      lut.A.push(item.index === 0 ? 0 : 255);
      lut.I.push(item.index);
      lut.labels.push(item.label);
    }
    return lut;
  }

  function fillClasses(classes) {
    const select = $(".nv-class");
    select.replaceChildren(...classes.filter((c) => c.index !== 0).map((c) => {
      const option = document.createElement("option");
      option.value = String(c.index);
      option.textContent = `${c.index} · ${c.label}`;
      option.style.color = c.color;
      return option;
    }));
    state.label = Number(select.value || 1);
  }

  // ---- Readout ----

  // `location.vox` is in NiiVue's RAS-ordered grid (the drawing's); the readout names the voxel in the file's own
  // order, as the rest of the page does.
  function readout(location) {
    const box = $(".nv-location");
    const volume = state.nv && state.nv.volumes[0];
    if (!box || !location || !location.vox || !volume || !volume.img2RASstep) return;
    const ras = Array.from(location.vox, Math.round);
    const dims = volume.dimsRAS;
    const bitmap = state.nv.drawBitmap;
    const label = bitmap ? bitmap[ras[0] + ras[1] * dims[1] + ras[2] * dims[1] * dims[2]] || 0 : 0;
    let native = 0;
    for (let axis = 0; axis < 3; axis++) native += volume.img2RASstart[axis] + ras[axis] * volume.img2RASstep[axis];
    const [nx, ny] = [volume.hdr.dims[1], volume.hdr.dims[2]];
    const [i, j, k] = [native % nx, Math.floor(native / nx) % ny, Math.floor(native / (nx * ny))];
    const named = ((state.payload && state.payload.classes) || []).find((c) => c.index === label);
    const value = location.values && location.values[0] ? Number(location.values[0].value) : NaN;
    Object.assign(box.dataset, { i, j, k, label });
    box.textContent = `voxel (${i}, ${j}, ${k}) · intensity ${value.toPrecision(4)} · mask ${named ? named.label : label}`;
  }

  // ---- Cases ----

  async function show(payload) {
    state.payload = payload || null;
    if (!payload) {
      say("Open a case in the Worklist tab (or segment a volume): it is shown here, ready to correct.");
      return;
    }
    const key = `${payload.case}/${payload.revision}`;
    if (!state.nv || (state.loaded === key && !payload.reload) || state.loading === key) return;
    state.loading = key;
    say(`Loading ${payload.name}…`);
    try {
      await state.nv.loadVolumes([{ url: payload.volume, name: payload.volumeName }]);
      const mask = await window.niivue.NVImage.loadFromUrl({ url: payload.mask, name: "mask.nii.gz" });
      if (!state.nv.loadDrawing(mask)) throw new Error("the mask is not on the volume's grid");
      state.nv.setDrawColormap(classLut(payload.classes));
      state.nv.setDrawOpacity(Number($(".nv-opacity").value));
      fillClasses(payload.classes);
      fitWindow(payload.window);
      state.shadow = state.nv.drawBitmap.slice();
      state.baseline = state.nv.drawBitmap.slice();
      state.undo = [];
      state.redo = [];
      state.loaded = key;
      useTool(state.tool);
      say("");
    } catch (error) {
      say(`The case could not be loaded (${error.message}): reload the page.`, "error");
    } finally {
      state.loading = null;
      state.root.dataset.loaded = state.loaded || "";
      showChanges();
    }
  }

  async function gzip(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  async function save() {
    const payload = state.payload;
    if (!payload || !state.nv || !state.nv.drawBitmap) return;
    $(".nv-save").disabled = true;
    say("Saving the correction…");
    const drawn = await state.nv.saveImage({ filename: "", isSaveDrawing: true, volumeByIndex: 0 });
    const form = new FormData();
    form.append("mask", new File([await gzip(drawn)], `${payload.case}_drawn.nii.gz`, { type: "application/gzip" }));
    // The name typed in the page may be newer than the one the viewer was given (it is sent when the box loses focus).
    const typed = document.querySelector("#reviewer-name input, #reviewer-name textarea");
    const name = (typed && typed.value.trim()) || payload.author;
    const author = name ? `?author=${encodeURIComponent(name)}` : "";
    let answer;
    try {
      answer = await fetch(payload.save + author, { method: "POST", body: form, headers: { "If-Match": payload.etag } });
    } catch (error) {
      say(`Not saved: the server could not be reached (${error.message}). Your drawing is still here: try again.`,
        "error");
      showChanges();
      return;
    }
    const body = await answer.json().catch(() => ({}));
    if (answer.status === 412) {
      say("Not saved: someone else changed this case since you opened it. Reload the case (Reload case) to see " +
        "their change, then draw your correction again.", "error");
    } else if (!answer.ok) {
      say(`Not saved: ${body.detail || answer.statusText}`, "error");
    } else {
      const revision = body.latest_revision;
      state.loaded = `${payload.case}/${revision}`;
      Object.assign(payload, { revision, etag: body.etag, version: body.version });
      state.baseline = state.nv.drawBitmap.slice();
      say(`Saved as revision ${revision}.`);
      state.trigger("submit", { case: payload.case, version: body.version, revision });
    }
    showChanges();
  }

  // ---- Page wiring ----

  function wire(root) {
    root.querySelector(".nv-tools").addEventListener("change", (event) => useTool(event.target.value));
    root.querySelector(".nv-class").addEventListener("change", (event) => {
      state.label = Number(event.target.value);
      if (state.tool === "paint" || state.tool === "fill") useTool(state.tool);
    });
    root.querySelector(".nv-pen").addEventListener("input", (event) => {
      if (state.nv) state.nv.opts.penSize = Number(event.target.value);
    });
    root.querySelector(".nv-opacity").addEventListener("input", (event) => {
      if (state.nv) state.nv.setDrawOpacity(Number(event.target.value));
    });
    for (const selector of [".nv-low", ".nv-high"]) root.querySelector(selector).addEventListener("input", setWindow);
    root.querySelector(".nv-auto").addEventListener("click", () => state.payload && fitWindow(state.payload.window));
    root.querySelector(".nv-render").addEventListener("change", (event) => {
      if (!state.nv) return;
      state.nv.opts.multiplanarShowRender = event.target.checked ? window.niivue.SHOW_RENDER.ALWAYS
        : window.niivue.SHOW_RENDER.NEVER;
      state.nv.drawScene();
    });
    root.querySelector(".nv-undo").addEventListener("click", undo);
    root.querySelector(".nv-redo").addEventListener("click", redo);
    root.querySelector(".nv-save").addEventListener("click", save);
  }

  // Leaving a case with an unsaved correction asks first (the next case would replace the drawing).
  const LEAVING = "#case-next, #case-prev, #next-unreviewed, #case-reload, #worklist [role=gridcell]";
  const unsaved = () => Boolean(state.baseline && state.nv && state.nv.drawBitmap && changedSince(state.baseline));
  document.addEventListener("click", (event) => {
    const leaving = event.target.closest && event.target.closest(LEAVING);
    if (leaving && unsaved() && !window.confirm("Your correction of this case is not saved. Leave it anyway?")) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);
  window.addEventListener("beforeunload", (event) => { if (unsaved()) event.preventDefault(); });

  // The reviewer's name, typed once per tab, is kept by the tab (sessionStorage) through a reload of the page.
  function rememberName() {
    const box = document.querySelector("#reviewer-name input, #reviewer-name textarea");
    if (!box || box.dataset.remembered) return;
    box.dataset.remembered = "true";
    const saved = window.sessionStorage.getItem("unet3d-reviewer");
    if (saved && !box.value && !box.readOnly && !box.disabled) {
      box.value = saved;
      box.dispatchEvent(new Event("input", { bubbles: true }));
    }
    box.addEventListener("change", () => window.sessionStorage.setItem("unet3d-reviewer", box.value.trim()));
  }
  new MutationObserver(rememberName).observe(document.documentElement, { childList: true, subtree: true });

  function typing(target) {
    return target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
  }

  document.addEventListener("keydown", (event) => {
    if (typing(event.target) || event.altKey || event.metaKey) return;
    const key = event.key.toLowerCase();
    if (event.ctrlKey) {
      if (key === "z" && !event.shiftKey) undo();
      else if (key === "y" || (key === "z" && event.shiftKey)) redo();
      else return;
      event.preventDefault();
      return;
    }
    if (KEY_TOOLS[key] && state.root) {
      useTool(KEY_TOOLS[key]);
      return;
    }
    const button = KEY_BUTTONS[key] && document.getElementById(KEY_BUTTONS[key]);
    if (button && !button.disabled) {
      event.preventDefault();
      button.click();
    }
  });

  async function mount(root, trigger, props, watch) {
    state.root = root;
    state.trigger = trigger;
    wire(root);
    watch("value", () => show(props.value));
    let niivue;
    try {
      niivue = await loadBundle();
    } catch {
      say(root.dataset.missing, "error");
      return;
    }
    const nv = new niivue.Niivue({
      backColor: [0.02, 0.03, 0.05, 1], crosshairColor: [0.05, 0.85, 0.75, 1], isColorbar: false,
      show3Dcrosshair: true, isRadiologicalConvention: true, dragAndDropEnabled: false, loadingText: "",
      multiplanarShowRender: niivue.SHOW_RENDER.ALWAYS, penSize: Number(root.querySelector(".nv-pen").value),
      logLevel: "error",
    });
    const canvas = root.querySelector("canvas");
    // NiiVue focuses the canvas on every click and wheel step; a plain focus() scrolls the page when the canvas is
    // not wholly in view, which moves the image under the pointer in the middle of a scroll or a stroke.
    const focus = canvas.focus.bind(canvas);
    canvas.focus = (options) => focus({ ...options, preventScroll: true });
    await nv.attachToCanvas(canvas);
    nv.setSliceType(nv.sliceTypeMultiplanar);
    nv.setMultiplanarLayout(niivue.MULTIPLANAR_TYPE.GRID);  // 2 × 2: each view larger than in one row
    nv.onLocationChange = readout;
    nv.onDrawingChanged = (action) => action === "draw" && recordStroke();
    state.nv = nv;
    new ResizeObserver(() => nv.resizeListener()).observe(root.querySelector(".nv-stage"));
    root.dataset.ready = "true";
    show(props.value);
  }

  // For the page (js_on_load of the viewer) and for tests: the state of the open case.
  window.unet3dViewer = {
    mount,
    // Where the view of one plane (0 axial, 1 coronal, 2 sagittal) sits in the canvas, in CSS pixels.
    tile: (axCorSag) => {
      const slice = state.nv && state.nv.screenSlices.find((s) => s.axCorSag === axCorSag);
      if (!slice) return null;
      const [left, top, width, height] = slice.leftTopWidthHeight.map((v) => v / state.nv.uiData.dpr);
      return { left, top, width, height };
    },
    state: () => ({
      loaded: state.loaded,
      changed: state.baseline ? changedSince(state.baseline) : 0,
      labels: state.nv && state.nv.drawBitmap ? state.nv.drawBitmap.reduce((counts, v) => {
        counts[v] = (counts[v] || 0) + 1;
        return counts;
      }, {}) : {},
    }),
  };
})();
