// The diagnostic image viewer of imaging-hub: a thin layer over Cornerstone3D (core, tools,
// dicom-image-loader). Built by build.mjs into src/imaging_hub/viewer_static/viewer/viewer.js;
// the study page (viewer_static/pages/study.js) imports it and builds every piece of UI itself
// (toolbar, overlay text, measurement list, with dom.h and i18n.t). This module knows nothing
// of the page: it renders series into the elements it is given and reports what it shows.
//
// Pixels: WADO-RS frames (…/instances/{sop}/frames/{n}) fetched by the DICOM image loader with
// the session cookie (same-origin XHR), asked for in the instance's stored transfer syntax, so
// compressed frames travel compressed and are decoded here (web worker, WASM codecs next to
// this file). Metadata: the series' WADO-RS /metadata, given by the page (fetched once).

import {
  Enums as csEnums,
  RenderingEngine,
  cache,
  eventTarget,
  getRenderingCapabilities,
  getShouldUseCPURendering,
  imageLoadPoolManager,
  imageLoader,
  init as csInit,
  metaData,
  setUseCPURendering,
  utilities as csUtilities,
} from "@cornerstonejs/core";
import {
  AngleTool,
  EllipticalROITool,
  Enums as toolEnums,
  LengthTool,
  PanTool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  SynchronizerManager,
  addTool,
  annotation,
  init as toolsInit,
  synchronizers,
  utilities as toolUtilities,
} from "@cornerstonejs/tools";
import { init as loaderInit, wadors } from "@cornerstonejs/dicom-image-loader";

const { MouseBindings, KeyboardBindings } = toolEnums;
const { Events, ViewportType, RequestType } = csEnums;

export const TOOLS = {
  wl: WindowLevelTool.toolName,
  pan: PanTool.toolName,
  zoom: ZoomTool.toolName,
  length: LengthTool.toolName,
  angle: AngleTool.toolName,
  ellipse: EllipticalROITool.toolName,
};
const MEASURE_TOOLS = [LengthTool.toolName, AngleTool.toolName, EllipticalROITool.toolName];

const TAG = {
  TransferSyntaxUID: "00020010",
  AvailableTransferSyntaxUID: "00083002",
  SOPInstanceUID: "00080018",
  Modality: "00080060",
  InstanceNumber: "00200013",
  NumberOfFrames: "00280008",
  Rows: "00280010",
  Columns: "00280011",
  PixelSpacing: "00280030",
  ImagerPixelSpacing: "00181164",
  WindowCenter: "00281050",
  WindowWidth: "00281051",
  PhotometricInterpretation: "00280004",
  BitsAllocated: "00280100",
  SamplesPerPixel: "00280002",
  FrameTime: "00181063",
  CineRate: "00180040",
  RecommendedDisplayFrameRate: "00082144",
  ImagePositionPatient: "00200032",
  ImageOrientationPatient: "00200037",
  FrameOfReferenceUID: "00200052",
};

function firstValue(meta, tag) {
  const element = meta && meta[tag];
  if (!element || !Array.isArray(element.Value) || !element.Value.length) return undefined;
  return element.Value[0];
}

function numberValue(meta, tag, index = 0) {
  const element = meta && meta[tag];
  const value = element && Array.isArray(element.Value) ? element.Value[index] : undefined;
  const n = Number(value);
  return value === undefined || value === null || value === "" || !Number.isFinite(n) ? null : n;
}

let ready = null;
let rendering = { mode: "gpu", renderer: "" };

/**
 * How images are drawn: { mode: "gpu" | "cpu", renderer: the WebGL renderer's name, software:
 * whether that is a software rasteriser }.
 */
export function renderingMode() {
  return { ...rendering };
}

/**
 * Initialise Cornerstone once per page load. maxCacheBytes bounds the decoded-image cache
 * (Cornerstone evicts the least recently used images beyond it). renderer: "auto" (default)
 * draws with WebGL on a GPU and with Cornerstone's CPU path when WebGL is a software rasteriser
 * (there, WebGL is the CPU doing a GPU's work plus a read-back of every frame); "gpu" / "cpu"
 * force one path.
 */
export function initViewer({ maxCacheBytes = 768 * 1024 * 1024, renderer = "auto" } = {}) {
  if (ready) return ready;
  ready = (async () => {
    // One WebGL context per viewport of the largest layout (2x2), not Cornerstone's default 7:
    // each context costs its creation when a study page opens.
    csInit({ rendering: { webGlContextCount: 4 } });
    // Cornerstone's own probe (made by init): the WebGL renderer's name and whether it is a
    // software rasteriser (SwiftShader, llvmpipe, softpipe, Microsoft Basic Render Driver), as in
    // chromium with --disable-gpu or on a machine without a usable GPU driver.
    const caps = getRenderingCapabilities();
    const software = !caps.webgl || Boolean(caps.softwareRasterizer);
    const cpu = renderer === "cpu" || (renderer === "auto" && software);
    if (cpu) setUseCPURendering(true);
    // Without WebGL Cornerstone draws on the CPU whatever was asked.
    rendering = { mode: getShouldUseCPURendering() ? "cpu" : "gpu", renderer: caps.renderer || "", software };
    const base = new URL(".", import.meta.url).href;
    loaderInit({
      maxWebWorkers: Math.max(1, Math.min(4, (navigator.hardwareConcurrency || 2) - 1)),
      wasmBasePath: base,
      beforeSend: (xhr, imageId) => ({ Accept: acceptFor(imageId) }),
    });
    toolsInit();
    for (const tool of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool, LengthTool, AngleTool, EllipticalROITool]) {
      addTool(tool);
    }
    cache.setMaxCacheSize(maxCacheBytes);
  })();
  return ready;
}

// Stored transfer syntax per imageId when the metadata names it (File Meta 0002,0010 or
// Available Transfer Syntax 0008,3002), for the Accept header; otherwise "transfer-syntax=*"
// (as stored). Either way the hub sends compressed frames as stored (decoded here) and native
// ones raw, never re-encoded.
const storedSyntax = new Map();

function acceptFor(imageId) {
  const syntax = storedSyntax.get(imageId) || "*";
  return `multipart/related; type="application/octet-stream"; transfer-syntax=${syntax}`;
}

// PALETTE COLOR: the Red, Green and Blue Palette Color Lookup Table Data, their descriptors and
// their Segmented Palette Color Lookup Table Data (PS3.3 C.7.9.2).
const PALETTE = [
  ["00281201", "00281101", "00281221"],
  ["00281202", "00281102", "00281222"],
  ["00281203", "00281103", "00281223"],
];

/**
 * A segmented palette table (16-bit words: discrete, linear and indirect segments, PS3.3
 * C.7.9.2.1) expanded into its entries, as pydicom's _expand_segmented_lut does.
 */
export function expandSegmented(words, count = Infinity, last = null, depth = 0) {
  if (depth > 4) throw new Error("segmented palette: indirect segments nested too deep");
  const out = [];
  let at = 0;
  let segments = 0;
  while (at + 1 < words.length && segments < count) {
    const opcode = words[at];
    const length = words[at + 1];
    at += 2;
    if (opcode === 0) {
      for (let i = 0; i < length && at < words.length; i++) out.push(words[at++]);
    } else if (opcode === 1) {
      const y0 = out.length ? out[out.length - 1] : last;
      if (y0 === null || at >= words.length) throw new Error("segmented palette: a linear segment without a start");
      const y1 = words[at++];
      for (let i = 1; i <= length; i++) out.push(Math.round(y0 + ((y1 - y0) * i) / length));
    } else if (opcode === 2) {
      if (at + 1 >= words.length) throw new Error("segmented palette: a truncated indirect segment");
      const offset = words[at] | (words[at + 1] << 16);
      at += 2;
      out.push(...expandSegmented(words.subarray(offset), length, out.length ? out[out.length - 1] : last, depth + 1));
    } else {
      throw new Error(`segmented palette: unknown segment type ${opcode}`);
    }
    segments += 1;
    if (out.length > 65536) throw new Error("segmented palette: more than 65536 entries");
  }
  return out;
}

function base64Bytes(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

/** The body of the single part of a multipart/related answer (the whole body if not multipart). */
function singlePart(bytes, contentType) {
  const m = /boundary="?([^";]+)"?/i.exec(contentType || "");
  if (!/multipart/i.test(contentType || "") || !m) return bytes;
  const text = new TextDecoder("latin1").decode(bytes);
  const start = text.indexOf("\r\n\r\n");
  const end = text.lastIndexOf(`\r\n--${m[1]}`);
  if (start < 0 || end < start) throw new Error("malformed multipart answer");
  return bytes.subarray(start + 4, end);
}

/** Lookup table entries from its bytes: 16-bit words, or bytes when the table holds 8-bit entries. */
function lutValues(bytes, descriptor) {
  const entries = (descriptor && descriptor[0]) || 65536;
  const bits = descriptor && descriptor[2];
  if (bits === 8 && bytes.byteLength === entries) return Array.from(bytes);
  const words = new Uint16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + (bytes.byteLength & ~1)));
  return Array.from(words.subarray(0, entries));
}

/**
 * A PALETTE COLOR instance's lookup tables as numbers: the hub's metadata carries them as
 * BulkDataURI (or InlineBinary), which Cornerstone's WADO-RS metadata provider does not read, so
 * such an image could not be shown at all. Returns a copy of meta with each table's Value filled
 * (meta itself when nothing needed fetching).
 */
async function withPalette(meta) {
  if (firstValue(meta, TAG.PhotometricInterpretation) !== "PALETTE COLOR") return meta;
  const copy = { ...meta };
  for (const [plainTag, descriptorTag, segmentedTag] of PALETTE) {
    const segmented = !meta[plainTag] && meta[segmentedTag];
    const element = segmented || meta[plainTag];
    if (!element || Array.isArray(element.Value)) continue;
    const descriptor = Array.isArray(meta[descriptorTag] && meta[descriptorTag].Value) ? meta[descriptorTag].Value.map(Number) : null;
    let bytes = null;
    if (typeof element.InlineBinary === "string") bytes = base64Bytes(element.InlineBinary);
    else if (typeof element.BulkDataURI === "string") {
      const url = new URL(element.BulkDataURI, window.location.href);
      if (url.origin !== window.location.origin) continue; // the hub's own URLs only
      const answer = await fetch(url.href, { credentials: "same-origin", headers: { Accept: 'multipart/related; type="application/octet-stream"' } });
      if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
      bytes = singlePart(new Uint8Array(await answer.arrayBuffer()), answer.headers.get("Content-Type"));
    }
    if (!bytes) continue;
    if (segmented) {
      const words = new Uint16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + (bytes.byteLength & ~1)));
      copy[plainTag] = { vr: "OW", Value: expandSegmented(words) };
    } else {
      copy[plainTag] = { vr: element.vr || "OW", Value: lutValues(bytes, descriptor) };
    }
  }
  return copy;
}

/**
 * A series from its WADO-RS metadata (an array of DICOM JSON instances): the imageIds in
 * display order (instances by Instance Number, then frames) and, per imageId, which instance
 * (1-based position) and frame it is. base: the series URL ("/dicomweb/studies/…/series/…").
 * Async: a PALETTE COLOR instance's lookup tables are fetched first (withPalette).
 */
export async function registerSeries(base, metadata) {
  // A table that cannot be fetched leaves that instance as it was (its image then says it cannot
  // be shown; the rest of the series is unaffected).
  const given = await Promise.all((metadata || []).map((m) => withPalette(m).catch(() => m)));
  return registerSeriesNow(base, given);
}

function registerSeriesNow(base, metadata) {
  const instances = (metadata || [])
    .filter((m) => firstValue(m, TAG.SOPInstanceUID) && firstValue(m, TAG.Rows))
    .map((m) => ({ meta: m, sop: String(firstValue(m, TAG.SOPInstanceUID)), number: numberValue(m, TAG.InstanceNumber) }))
    .sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9) || (a.sop < b.sop ? -1 : a.sop > b.sop ? 1 : 0));
  const images = [];
  instances.forEach((inst, i) => {
    const frames = Math.max(1, numberValue(inst.meta, TAG.NumberOfFrames) || 1);
    const syntax = firstValue(inst.meta, TAG.TransferSyntaxUID) || firstValue(inst.meta, TAG.AvailableTransferSyntaxUID);
    // Only Imager Pixel Spacing (a projection image without calibration): Cornerstone's WADO
    // metadata gives such images no spacing, so lengths would be in pixels. Measured at the
    // detector plane instead (magnification not corrected; the page labels it "at detector").
    const detector =
      spacingKind(inst.meta) === "detector"
        ? { scale: 1, rowPixelSpacing: numberValue(inst.meta, TAG.ImagerPixelSpacing, 0), columnPixelSpacing: numberValue(inst.meta, TAG.ImagerPixelSpacing, 1) }
        : null;
    for (let frame = 1; frame <= frames; frame++) {
      const imageId = `wadors:${base}/instances/${inst.sop}/frames/${frame}`;
      wadors.metaDataManager.add(imageId, inst.meta);
      if (syntax) storedSyntax.set(imageId, String(syntax));
      if (detector) csUtilities.calibratedPixelSpacingMetadataProvider.add(imageId, detector);
      images.push({ imageId, instance: i + 1, instances: instances.length, frame, frames, sop: inst.sop, meta: inst.meta });
    }
  });
  return images;
}

/** What a measurement's lengths are in: mm of the patient, mm at the detector, or pixels. */
export function spacingKind(meta) {
  const ps = meta && meta[TAG.PixelSpacing];
  if (ps && Array.isArray(ps.Value) && ps.Value.length >= 2) return "patient";
  const ips = meta && meta[TAG.ImagerPixelSpacing];
  if (ips && Array.isArray(ips.Value) && ips.Value.length >= 2) return "detector";
  return "pixels";
}

/** The image's own VOI window from its metadata ([center, width]), or null. */
export function ownWindow(meta) {
  const center = numberValue(meta, TAG.WindowCenter);
  const width = numberValue(meta, TAG.WindowWidth);
  return center !== null && width !== null && width > 0 ? [center, width] : null;
}

/** Frames per second the image asks for (Recommended Display Frame Rate, Cine Rate, Frame Time). */
export function cineRate(meta) {
  const rate = numberValue(meta, TAG.RecommendedDisplayFrameRate) || numberValue(meta, TAG.CineRate);
  if (rate && rate > 0) return Math.min(60, Math.round(rate));
  const frameTime = numberValue(meta, TAG.FrameTime);
  if (frameTime && frameTime > 0) return Math.max(1, Math.min(60, Math.round(1000 / frameTime)));
  return 15;
}

function vector(meta, tag, length) {
  const element = meta && meta[tag];
  const list = element && Array.isArray(element.Value) ? element.Value.map(Number) : [];
  return list.length === length && list.every(Number.isFinite) ? list : null;
}

/** The slice normal of an image (cross product of its row and column directions), or null. */
function sliceNormal(meta) {
  const o = vector(meta, TAG.ImageOrientationPatient, 6);
  if (!o) return null;
  const n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
  const length = Math.hypot(...n);
  return length > 0 ? n.map((v) => v / length) : null;
}

/**
 * Whether two series (their registerSeries images) can scroll together: both cross-sectional
 * stacks (each image with a position and an orientation) of more than one image, with the same
 * orientation (slice normals within about 8 degrees; either direction).
 */
export function sameOrientation(imagesA, imagesB) {
  if (!imagesA || !imagesB || imagesA.length < 2 || imagesB.length < 2) return false;
  const a = imagesA[0].meta;
  const b = imagesB[0].meta;
  const na = sliceNormal(a);
  const nb = sliceNormal(b);
  if (!na || !nb || !vector(a, TAG.ImagePositionPatient, 3) || !vector(b, TAG.ImagePositionPatient, 3)) return false;
  return Math.abs(na[0] * nb[0] + na[1] * nb[1] + na[2] * nb[2]) > 0.99;
}

let engineCount = 0;

/**
 * The viewer of one study page. onChange(viewportId) is called (at most once a frame per
 * viewport) when what a viewport shows changed: image, window, zoom, measurements, errors.
 */
export class HubViewer {
  constructor({ onChange, onProgress } = {}) {
    engineCount += 1;
    this.id = `hub-${engineCount}`;
    this.engine = new RenderingEngine(`${this.id}-engine`);
    this.group = ToolGroupManager.createToolGroup(`${this.id}-tools`);
    for (const name of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool, LengthTool, AngleTool, EllipticalROITool].map((t) => t.toolName)) {
      this.group.addTool(name);
    }
    this.onChange = onChange || (() => {});
    this.onProgress = onProgress || (() => {});
    this.viewports = new Map(); // id -> { element, images, series, error, shownImageId, pending }
    this.pendingChange = new Set();
    this.frameRequest = 0;
    this.scrollRequest = 0;
    this.prefetchJobs = new Map(); // series key -> { cancelled }
    this.primary = "wl";
    this.setPrimaryTool("wl");
    // Synchronised scrolling (Cornerstone's image slice synchronizer: the target shows the
    // slice nearest to the source's position, through a registration between the two).
    this.sliceSync = synchronizers.createImageSliceSynchronizer(`${this.id}-slices`);
    this.linked = [];
    this.listeners = [];
    this.listen(eventTarget, Events.IMAGE_LOAD_ERROR, (e) => this.loadError(e.detail));
    this.listen(eventTarget, Events.IMAGE_LOAD_FAILED, (e) => this.loadError(e.detail));
    for (const name of [toolEnums.Events.ANNOTATION_COMPLETED, toolEnums.Events.ANNOTATION_MODIFIED, toolEnums.Events.ANNOTATION_REMOVED]) {
      this.listen(eventTarget, name, () => this.changedAll());
    }
  }

  listen(target, name, fn) {
    target.addEventListener(name, fn);
    this.listeners.push(() => target.removeEventListener(name, fn));
  }

  /** Primary (left) mouse button tool; right drag zooms, middle drag pans, wheel scrolls. */
  setPrimaryTool(key) {
    this.primary = key;
    const extra = {
      [ZoomTool.toolName]: [{ mouseButton: MouseBindings.Secondary }, { mouseButton: MouseBindings.Wheel, modifierKey: KeyboardBindings.Ctrl }],
      [PanTool.toolName]: [{ mouseButton: MouseBindings.Auxiliary }],
      [StackScrollTool.toolName]: [{ mouseButton: MouseBindings.Wheel }],
    };
    for (const name of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool, LengthTool, AngleTool, EllipticalROITool].map((t) => t.toolName)) {
      const bindings = [...(extra[name] || [])];
      if (TOOLS[key] === name) bindings.push({ mouseButton: MouseBindings.Primary });
      this.group.setToolPassive(name, { removeAllBindings: true });
      if (bindings.length) this.group.setToolActive(name, { bindings });
    }
  }

  /** Enable the given elements as stack viewports (and disable the ones no longer given). */
  setViewports(entries) {
    const wanted = new Set(entries.map((e) => e.id));
    for (const id of [...this.viewports.keys()]) {
      if (!wanted.has(id)) this.disable(id);
    }
    for (const { id, element } of entries) {
      const known = this.viewports.get(id);
      if (known && known.element === element) continue;
      if (known) this.disable(id);
      this.engine.enableElement({ viewportId: id, element, type: ViewportType.STACK, defaultOptions: { background: [0, 0, 0] } });
      this.group.addViewport(id, this.engine.id);
      const state = { element, images: [], series: null, error: null, shownImageId: null, token: 0, cine: false };
      this.viewports.set(id, state);
      const changed = () => this.changed(id);
      const rendered = () => {
        const vp = this.viewport(id);
        const current = vp && vp.getCurrentImageId && vp.getCurrentImageId();
        // Wrong-image guard: the element shows pixels only once an image of its own stack is drawn.
        if (current && state.images.some((im) => im.imageId === current)) {
          state.shownImageId = current;
          element.classList.remove("vp-blank");
        }
        this.changed(id);
      };
      for (const name of [Events.STACK_NEW_IMAGE, Events.VOI_MODIFIED, Events.CAMERA_MODIFIED, Events.STACK_VIEWPORT_SCROLL]) {
        element.addEventListener(name, changed);
      }
      element.addEventListener(Events.IMAGE_RENDERED, rendered);
      // Measurement statistics are computed when annotations are drawn: list them after that.
      element.addEventListener(toolEnums.Events.ANNOTATION_RENDERED, changed);
    }
    this.engine.resize(true, true);
  }

  disable(id) {
    const state = this.viewports.get(id);
    if (!state) return;
    this.stopCine(id);
    if (this.linked.includes(id)) this.unlinkSlices();
    try {
      this.group.removeViewports(this.engine.id, id);
      this.engine.disableElement(id);
    } catch {
      // Already gone with its element.
    }
    this.viewports.delete(id);
  }

  viewport(id) {
    try {
      return this.engine.getViewport(id);
    } catch {
      return null;
    }
  }

  /** Show a series (its registerSeries images) in viewport id, at image index (0-based). */
  async showSeries(id, series, images, index = 0, { voi, invert } = {}) {
    const state = this.viewports.get(id);
    const vp = this.viewport(id);
    if (!state || !vp) return;
    this.stopCine(id);
    state.token += 1;
    const token = state.token;
    state.series = series;
    state.images = images;
    state.error = null;
    state.shownImageId = null;
    state.defaults = new Map();
    state.element.classList.add("vp-blank"); // never another series' image while this one loads
    this.changed(id);
    if (!images.length) return;
    const start = Math.max(0, Math.min(images.length - 1, index));
    try {
      await vp.setStack(images.map((im) => im.imageId), start);
      if (token !== state.token) return;
      if (voi) vp.setProperties({ voiRange: toRange(voi) });
      if (invert !== undefined) this.setInvert(id, invert);
      vp.render();
    } catch (err) {
      if (token === state.token) this.fail(id, images[start].imageId, err);
    }
    this.changed(id);
  }

  /**
   * Give viewport id the whole series after showSeries was given a part of it (the first image,
   * from its instance-level metadata, shown before the series' /metadata arrived). The image on
   * screen stays as it is: the stack's image list is replaced in place (no setStack, which would
   * clear the canvas, reset window and camera and draw again). Returns false when the viewport
   * no longer shows an image of the new list (the caller then uses showSeries).
   */
  extendSeries(id, images) {
    const state = this.viewports.get(id);
    const vp = this.viewport(id);
    if (!state || !vp || !images.length) return false;
    const current = vp.getCurrentImageId && vp.getCurrentImageId();
    const index = images.findIndex((im) => im.imageId === current);
    if (index < 0 || !(vp.imageKeyToIndexMap instanceof Map) || !Array.isArray(vp.imageIds)) return false;
    const ids = images.map((im) => im.imageId);
    // StackViewport's own fields, as setStack fills them (Cornerstone 5.x); the image, its
    // actor, window and camera are untouched.
    vp.imageIds = ids;
    vp.imageKeyToIndexMap.clear();
    ids.forEach((imageId, i) => {
      vp.imageKeyToIndexMap.set(imageId, i);
      vp.imageKeyToIndexMap.set(csUtilities.imageIdToURI(imageId), i);
    });
    vp.currentImageIdIndex = index;
    vp.targetImageIdIndex = index;
    state.images = images;
    this.changed(id);
    return true;
  }

  fail(id, imageId, err) {
    const state = this.viewports.get(id);
    if (!state) return;
    state.error = { imageId, message: errorMessage(err) };
    state.element.classList.add("vp-blank");
    this.changed(id);
  }

  loadError(detail) {
    const imageId = detail && (detail.imageId || (detail.error && detail.error.imageId));
    if (!imageId) return;
    for (const [id, state] of this.viewports) {
      const vp = this.viewport(id);
      const target = vp && state.images.length ? state.images[vp.getTargetImageIdIndex ? vp.getTargetImageIdIndex() : vp.getCurrentImageIdIndex()] : null;
      if (target && target.imageId === imageId) this.fail(id, imageId, detail.error);
    }
  }

  /** Go to image index (0-based, display order) in viewport id. */
  async jumpTo(id, index) {
    const state = this.viewports.get(id);
    const vp = this.viewport(id);
    if (!state || !vp || !state.images.length) return;
    const target = Math.max(0, Math.min(state.images.length - 1, index));
    state.error = null;
    try {
      await vp.setImageIdIndex(target);
    } catch (err) {
      this.fail(id, state.images[target].imageId, err);
    }
    this.changed(id);
  }

  /**
   * Scroll viewport id by delta images. Steps are batched per animation frame (a burst of keys
   * or wheel steps within one frame moves once, by their sum) and the new image is drawn in that
   * same frame (see flushRender), not one frame later.
   */
  scroll(id, delta) {
    const state = this.viewports.get(id);
    if (!state || !this.viewport(id)) return;
    state.scrollDelta = (state.scrollDelta || 0) + delta;
    if (this.scrollRequest) return;
    this.scrollRequest = requestAnimationFrame(() => {
      this.scrollRequest = 0;
      for (const [vid, st] of this.viewports) {
        const step = st.scrollDelta || 0;
        st.scrollDelta = 0;
        const vp = step && this.viewport(vid);
        if (!vp) continue;
        const index = vp.getTargetImageIdIndex ? vp.getTargetImageIdIndex() : vp.getCurrentImageIdIndex();
        this.jumpTo(vid, index + step).then(() => this.flushRender());
      }
    });
  }

  /**
   * Draw now what Cornerstone would draw at the next animation frame. Its rendering engine
   * draws in a requestAnimationFrame callback; a render asked for from inside one (our batched
   * scroll) would wait a whole frame, so every other frame would show no new slice.
   */
  flushRender() {
    const engine = this.engine;
    if (!engine || !engine._animationFrameSet || typeof engine._renderFlaggedViewports !== "function") return;
    cancelAnimationFrame(engine._animationFrameHandle);
    try {
      engine._renderFlaggedViewports();
    } catch (err) {
      console.warn("viewer: render failed", err);
    }
  }

  /** What viewport id shows now (for the overlay, the URL and the test hooks). */
  state(id) {
    const state = this.viewports.get(id);
    const vp = this.viewport(id);
    if (!state || !vp || !state.images.length) return state ? { series: state.series, error: state.error, images: 0 } : null;
    const index = vp.getCurrentImageIdIndex();
    const image = state.images[index];
    const props = vp.getProperties ? vp.getProperties() : {};
    const range = props.voiRange;
    const voi = range ? toCenterWidth(range) : null;
    return {
      series: state.series,
      index,
      images: state.images.length,
      image,
      shown: state.shownImageId === (image && image.imageId),
      error: state.error && image && state.error.imageId === image.imageId ? state.error : null,
      voi,
      invert: invertOf(vp),
      zoom: this.magnification(id),
      rotation: vp.getRotation ? vp.getRotation() : 0,
      cine: state.cine,
      linked: this.linked.includes(id),
      defaultVoi: image ? this.defaultVoi(id, image) : null,
    };
  }

  /** Device pixels on screen per image pixel (1 = "1:1"). */
  magnification(id) {
    const vp = this.viewport(id);
    if (!vp) return null;
    try {
      const image = vp.getImageData();
      const camera = vp.getCamera();
      const canvas = vp.getCanvas();
      if (!image || !camera || !camera.parallelScale || !canvas) return null;
      const spacing = image.spacing ? image.spacing[1] : 1;
      return canvas.height / ((2 * camera.parallelScale) / spacing);
    } catch {
      return null;
    }
  }

  defaultVoi(id, image) {
    const state = this.viewports.get(id);
    if (!state) return null;
    const key = image.sop;
    if (!state.defaults.has(key)) {
      const own = ownWindow(image.meta);
      if (own) state.defaults.set(key, own);
      else {
        const vp = this.viewport(id);
        const range = vp && vp.getProperties().voiRange;
        if (range && state.shownImageId === image.imageId) state.defaults.set(key, toCenterWidth(range));
        else return null;
      }
    }
    return state.defaults.get(key);
  }

  setWindow(id, center, width) {
    const vp = this.viewport(id);
    if (!vp || !(width > 0)) return;
    vp.setProperties({ voiRange: toRange([center, width]) });
    vp.render();
  }

  resetWindow(id) {
    const vp = this.viewport(id);
    if (!vp) return;
    const invert = invertOf(vp);
    vp.resetProperties();
    vp.setProperties({ invert });
    vp.render();
  }

  setInvert(id, value) {
    const vp = this.viewport(id);
    if (!vp) return;
    vp.setProperties({ invert: value === undefined ? !invertOf(vp) : value });
    vp.render();
  }

  rotate(id, degrees) {
    const vp = this.viewport(id);
    if (!vp) return;
    const current = vp.getRotation ? vp.getRotation() : 0;
    vp.setViewPresentation({ rotation: (((current + degrees) % 360) + 360) % 360 });
    vp.render();
  }

  flip(id, horizontal) {
    const vp = this.viewport(id);
    if (!vp) return;
    const camera = vp.getCamera();
    vp.flip(horizontal ? { flipHorizontal: !camera.flipHorizontal } : { flipVertical: !camera.flipVertical });
    vp.render();
  }

  fit(id) {
    const vp = this.viewport(id);
    if (!vp) return;
    vp.resetCamera({ resetPan: true, resetZoom: true });
    vp.render();
  }

  /** One image pixel per device pixel, around the current centre, on the device pixel grid. */
  actualSize(id) {
    const vp = this.viewport(id);
    const now = this.magnification(id);
    if (!vp || !now) return;
    vp.setZoom(vp.getZoom() / now);
    this.alignToDevicePixels(id);
    vp.render();
  }

  /**
   * Move the image by less than a device pixel so that its pixels' edges fall on the canvas's
   * (a centred image with an even side in a canvas with an odd one sits half a pixel off, and at
   * 1:1 each screen pixel would blend two image pixels).
   */
  alignToDevicePixels(id) {
    const vp = this.viewport(id);
    try {
      // The top-left corner of the first pixel, through the viewport's own image data: index
      // [0, 0] is that pixel's centre on the WebGL path (vtk image data) and its corner on the
      // CPU path (Cornerstone's legacy pixel coordinates).
      const data = vp.getImageData().imageData;
      const corner = data.indexToWorld(vp.useCPURendering ? [0, 0, 0] : [-0.5, -0.5, 0], [0, 0, 0]);
      const dpr = window.devicePixelRatio || 1;
      const at = vp.worldToCanvas(corner).map((v) => v * dpr);
      // Nearest device pixel edge; a half-pixel tie (floating point either side of .5) always
      // goes the same way on both paths.
      const off = at.map((v) => v - Math.floor(v + 0.5 - 1e-4));
      if (Math.abs(off[0]) < 0.01 && Math.abs(off[1]) < 0.01) return;
      const a = vp.canvasToWorld([0, 0]);
      const b = vp.canvasToWorld([off[0] / dpr, off[1] / dpr]);
      const camera = vp.getCamera();
      const move = (p) => p.map((v, i) => v + b[i] - a[i]);
      vp.setCamera({ focalPoint: move(camera.focalPoint), position: move(camera.position) });
    } catch {
      // No image yet: nothing to align.
    }
  }

  zoomBy(id, factor) {
    const vp = this.viewport(id);
    if (!vp) return;
    vp.setZoom(vp.getZoom() * factor);
    vp.render();
  }

  /** Window, zoom, pan, rotation, flips and invert back to the image's defaults. */
  reset(id) {
    const vp = this.viewport(id);
    if (!vp) return;
    this.stopCine(id);
    vp.resetProperties();
    vp.resetCamera();
    vp.setViewPresentation({ rotation: 0, flipHorizontal: false, flipVertical: false });
    vp.resetCamera();
    vp.render();
  }

  playCine(id, fps) {
    const state = this.viewports.get(id);
    if (!state || state.images.length < 2) return;
    toolUtilities.cine.playClip(state.element, { framesPerSecond: fps, loop: true });
    state.cine = fps;
    this.changed(id);
  }

  stopCine(id) {
    const state = this.viewports.get(id);
    if (!state || !state.cine) return;
    try {
      toolUtilities.cine.stopClip(state.element);
    } catch {
      // The element is already gone.
    }
    state.cine = false;
    this.changed(id);
  }

  /**
   * Scroll viewports ids together (the first one is the reference). Each pair is registered
   * by a translation: the identity within one Frame of Reference; across Frames of Reference
   * (a prior study), align "first" maps the first images of the two stacks onto each other,
   * align "current" the images shown now (scroll each to matching anatomy, then link). The
   * others then jump to the slice nearest to the reference's. Returns the linked ids.
   */
  linkSlices(ids, { align = "first" } = {}) {
    this.unlinkSlices();
    const usable = ids.filter((id) => {
      const state = this.viewports.get(id);
      return state && this.viewport(id) && state.images.length > 1;
    });
    if (usable.length < 2) return [];
    const [reference, ...others] = usable;
    const ref = this.viewports.get(reference);
    const linked = [reference];
    for (const id of others) {
      const state = this.viewports.get(id);
      if (!sameOrientation(ref.images, state.images)) continue;
      const from = this.registrationImage(reference, align);
      const to = this.registrationImage(id, align);
      const sameFrame =
        firstValue(from.meta, TAG.FrameOfReferenceUID) &&
        firstValue(from.meta, TAG.FrameOfReferenceUID) === firstValue(to.meta, TAG.FrameOfReferenceUID);
      const p = vector(from.meta, TAG.ImagePositionPatient, 3);
      const q = vector(to.meta, TAG.ImagePositionPatient, 3);
      const shift = sameFrame || !p || !q ? [0, 0, 0] : [q[0] - p[0], q[1] - p[1], q[2] - p[2]];
      const matrix = translation(shift);
      // Both directions (the provider inverts for the reverse lookup).
      csUtilities.spatialRegistrationMetadataProvider.add([id, reference], matrix);
      linked.push(id);
    }
    if (linked.length < 2) return [];
    for (const id of linked) this.sliceSync.add({ renderingEngineId: this.engine.id, viewportId: id });
    for (let i = 0; i < linked.length; i++) {
      for (let j = i + 1; j < linked.length; j++) {
        if (i === 0) continue;
        // Pairs of non-reference viewports: through the reference.
        const a = csUtilities.spatialRegistrationMetadataProvider.get("spatialRegistrationModule", linked[i], reference);
        const b = csUtilities.spatialRegistrationMetadataProvider.get("spatialRegistrationModule", linked[j], reference);
        csUtilities.spatialRegistrationMetadataProvider.add([linked[j], linked[i]], translation([b[12] - a[12], b[13] - a[13], b[14] - a[14]]));
      }
    }
    this.linked = linked;
    for (const id of linked.slice(1)) this.followSlice(reference, id);
    this.changedAll();
    return linked;
  }

  unlinkSlices() {
    for (const id of this.linked) {
      try {
        this.sliceSync.remove({ renderingEngineId: this.engine.id, viewportId: id });
      } catch {
        // Already gone.
      }
    }
    this.linked = [];
  }

  registrationImage(id, align) {
    const state = this.viewports.get(id);
    if (align === "current") {
      const vp = this.viewport(id);
      const index = vp ? vp.getCurrentImageIdIndex() : 0;
      return state.images[Math.max(0, Math.min(state.images.length - 1, index))];
    }
    return state.images[0];
  }

  /** Move viewport target to the slice nearest to what viewport source shows (registered). */
  followSlice(source, target) {
    const s = this.viewports.get(source);
    const t = this.viewports.get(target);
    const vp = this.viewport(source);
    if (!s || !t || !vp) return;
    const image = s.images[vp.getCurrentImageIdIndex()] || s.images[0];
    const p = vector(image.meta, TAG.ImagePositionPatient, 3);
    const m = csUtilities.spatialRegistrationMetadataProvider.get("spatialRegistrationModule", target, source);
    if (!p || !m) return;
    const goal = [p[0] + m[12], p[1] + m[13], p[2] + m[14]];
    let best = -1;
    let bestDistance = Infinity;
    t.images.forEach((im, i) => {
      const q = vector(im.meta, TAG.ImagePositionPatient, 3);
      if (!q) return;
      const d = Math.hypot(q[0] - goal[0], q[1] - goal[1], q[2] - goal[2]);
      if (d < bestDistance) {
        bestDistance = d;
        best = i;
      }
    });
    if (best >= 0) this.jumpTo(target, best);
  }

  /** Measurements drawn on the image viewport id shows now: tool, value, unit, points. */
  measurements(id) {
    const state = this.viewports.get(id);
    const vp = this.viewport(id);
    if (!state || !vp || !state.images.length) return [];
    const imageId = vp.getCurrentImageId();
    const image = state.images.find((im) => im.imageId === imageId);
    const kind = image ? spacingKind(image.meta) : "pixels";
    const list = [];
    for (const tool of MEASURE_TOOLS) {
      const found = annotation.state.getAnnotations(tool, state.element) || [];
      for (const item of found) {
        const ref = item.metadata && item.metadata.referencedImageId;
        if (ref && ref !== imageId) continue;
        const stats = Object.values((item.data && item.data.cachedStats) || {})[0] || {};
        const points = ((item.data && item.data.handles && item.data.handles.points) || []).map((p) => {
          const ij = toolImagePoint(vp, imageId, p);
          return ij ? [round(ij[0], 2), round(ij[1], 2)] : null;
        });
        const entry = { uid: item.annotationUID, tool, kind, points };
        if (tool === LengthTool.toolName) Object.assign(entry, { value: stats.length, unit: stats.unit });
        if (tool === AngleTool.toolName) Object.assign(entry, { value: stats.angle, unit: "°" });
        if (tool === EllipticalROITool.toolName) {
          Object.assign(entry, {
            value: stats.area,
            unit: stats.areaUnit,
            mean: stats.mean,
            stdDev: stats.stdDev,
            modalityUnit: stats.modalityUnit,
          });
        }
        if (entry.value === undefined || entry.value === null || Number.isNaN(entry.value)) continue;
        list.push(entry);
      }
    }
    return list;
  }

  removeMeasurement(uid) {
    annotation.state.removeAnnotation(uid);
    this.engine.render();
    this.changedAll();
  }

  clearMeasurements(id) {
    for (const m of this.measurements(id)) annotation.state.removeAnnotation(m.uid);
    this.engine.render();
    this.changedAll();
  }

  /**
   * Load every image of a series ahead, in display order starting at index start, within
   * budgetBytes of decoded pixels (the rest is loaded when shown). onProgress(key, done, total).
   */
  prefetch(key, images, start = 0, budgetBytes = 512 * 1024 * 1024) {
    const old = this.prefetchJobs.get(key);
    if (old) old.cancelled = true;
    const job = { cancelled: false };
    this.prefetchJobs.set(key, job);
    const order = [...images.slice(start), ...images.slice(0, start)];
    let budget = budgetBytes;
    const wanted = [];
    for (const im of order) {
      const rows = numberValue(im.meta, TAG.Rows) || 512;
      const cols = numberValue(im.meta, TAG.Columns) || 512;
      const samples = numberValue(im.meta, TAG.SamplesPerPixel) || 1;
      const bytes = rows * cols * samples * (samples > 1 ? 1 : 4); // scaled frames may be Float32
      if (budget - bytes < 0 && wanted.length) break;
      budget -= bytes;
      wanted.push(im.imageId);
    }
    let done = 0;
    const total = wanted.length;
    this.onProgress(key, 0, total);
    const finish = () => {
      done += 1;
      if (!job.cancelled) this.onProgress(key, done, total);
    };
    wanted.forEach((imageId, i) => {
      if (cache.isLoaded && cache.isLoaded(imageId)) {
        finish();
        return;
      }
      imageLoadPoolManager.addRequest(
        () => {
          if (job.cancelled) return Promise.resolve();
          return imageLoader
            .loadAndCacheImage(imageId, { priority: -5 + Math.min(4, Math.floor(i / 50)), requestType: RequestType.Prefetch })
            .then(finish, finish);
        },
        RequestType.Prefetch,
        { imageId },
        -5,
      );
    });
    return () => {
      job.cancelled = true;
    };
  }

  cancelPrefetch() {
    for (const job of this.prefetchJobs.values()) job.cancelled = true;
    this.prefetchJobs.clear();
    imageLoadPoolManager.clearRequestStack(RequestType.Prefetch);
  }

  resize() {
    this.engine.resize(true, true);
  }

  render(id) {
    const vp = this.viewport(id);
    if (vp) vp.render();
  }

  changed(id) {
    this.pendingChange.add(id);
    if (this.frameRequest) return;
    this.frameRequest = requestAnimationFrame(() => {
      this.frameRequest = 0;
      const ids = [...this.pendingChange];
      this.pendingChange.clear();
      for (const vid of ids) if (this.viewports.has(vid)) this.onChange(vid);
    });
  }

  changedAll() {
    for (const id of this.viewports.keys()) this.changed(id);
  }

  destroy() {
    const steps = [
      () => this.cancelPrefetch(),
      () => {
        for (const id of [...this.viewports.keys()]) this.stopCine(id);
      },
      () => {
        for (const off of this.listeners) off();
      },
      () => cancelAnimationFrame(this.frameRequest),
      () => cancelAnimationFrame(this.scrollRequest),
      // One viewer per page: its measurements go with it.
      () => annotation.state.removeAllAnnotations(),
      () => this.unlinkSlices(),
      () => SynchronizerManager.destroySynchronizer(this.sliceSync.id),
      () => ToolGroupManager.destroyToolGroup(this.group.id),
      () => this.engine.destroy(),
      () => this.viewports.clear(),
      // Decoded pixels of this page are not kept for the next study (bounded memory; no
      // patient's pixels linger after leaving the page).
      () => cache.purgeCache(),
    ];
    for (const step of steps) {
      try {
        step();
      } catch (err) {
        console.warn("viewer: cleanup step failed", err);
      }
    }
  }
}

/**
 * Whether viewport vp shows its image inverted. On the CPU path (software WebGL, see
 * softwareWebGL) Cornerstone keeps a MONOCHROME1 image's inversion in its fallback viewport and
 * not in the viewport's properties, which then say false for an inverted picture.
 */
function invertOf(vp) {
  const fallback = vp && vp.useCPURendering && vp._cpuFallbackEnabledElement && vp._cpuFallbackEnabledElement.viewport;
  if (fallback && typeof fallback.invert === "boolean") return fallback.invert;
  const props = vp && vp.getProperties ? vp.getProperties() : {};
  return Boolean(props.invert);
}

function toRange([center, width]) {
  return csUtilities.windowLevel.toLowHighRange(width, center);
}

function toCenterWidth(range) {
  const { windowCenter, windowWidth } = csUtilities.windowLevel.toWindowLevel(range.lower, range.upper);
  return [windowCenter, windowWidth];
}

/** A 4x4 translation matrix (column-major, as gl-matrix's mat4). */
function translation([x, y, z]) {
  const m = new Float32Array(16);
  m[0] = m[5] = m[10] = m[15] = 1;
  m[12] = x;
  m[13] = y;
  m[14] = z;
  return m;
}

function round(n, digits) {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

function toolImagePoint(vp, imageId, world) {
  try {
    return csUtilities.transformWorldToIndexContinuous(vp.getImageData().imageData, world);
  } catch {
    return null;
  }
}

function errorMessage(err) {
  if (!err) return "";
  if (typeof err === "string") return err;
  if (err.status) return `HTTP ${err.status}`;
  if (err.error) return errorMessage(err.error);
  if (err.message) return err.message;
  return String(err);
}

export { metaData };
