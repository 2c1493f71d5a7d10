// Study page (#/study/<StudyInstanceUID>): patient/study header with status, claim and timeline
// (GET /api/v1/studies/{uid}; a held claim is kept alive with heartbeats), series with
// thumbnails, and a simple image viewer (one image large, window presets, next/previous image,
// frame scrolling) over DICOMweb (PS3.18): QIDO-RS for series and instances, WADO-RS /rendered
// and /thumbnail for pixels. Images are fetched with the caller's session (apiBlob) and shown
// through object URLs. Measurements, reports and signing are not part of this page yet.

import { addStrings, formatDateTime, formatDicomDate, hasString, t } from "../i18n.js";
import { apiBlob, apiGet, apiPost } from "../api.js";
import { h, messageBox, replaceChildren } from "../dom.js";
import {
  formatNumber,
  formatPersonName,
  formatSexAge,
  priorityLabel,
  statusLabel,
} from "../format.js";
import { can, homePath, registerRoute, setQuery } from "../router.js";
import { TAG, first, number } from "../dicomjson.js";

addStrings({
  "zh-CN": {
    "study.title": "检查",
    "study.back": "返回",
    "study.patientId": "患者 ID",
    "study.date": "检查日期",
    "study.accession": "检查号",
    "study.modalities": "类型",
    "study.series": "序列",
    "study.seriesItem": "序列 {number} · {modality} · {count} 幅",
    "study.noSeries": "此检查没有可显示的序列。",
    "study.notFound": "未找到此检查，或您无权查看。",
    "study.image": "图像 {n} / {total}",
    "study.frame": "帧 {n} / {total}",
    "study.frameSlider": "帧",
    "study.prevImage": "上一幅",
    "study.nextImage": "下一幅",
    "study.prevFrame": "上一帧",
    "study.nextFrame": "下一帧",
    "study.window": "窗宽窗位",
    "study.center": "窗位",
    "study.width": "窗宽",
    "study.apply": "应用",
    "study.preset.default": "默认",
    "study.preset.soft": "软组织",
    "study.preset.lung": "肺窗",
    "study.preset.bone": "骨窗",
    "study.preset.brain": "脑窗",
    "study.preset.wide": "宽窗",
    "study.preset.contrast": "高对比",
    "study.loadingImage": "正在加载图像…",
    "study.imageFailed": "图像无法显示：{message}",
    "study.help": "滚轮或 ↑↓ 切换帧/图像，← → 切换图像。",
    "study.note": "本页用于浏览图像；测量、报告书写和签发将在后续版本提供。",
    "study.invalidWindow": "请输入有效的窗位和窗宽（窗宽大于 0）。",
    "study.clinic": "卫生院",
    "study.assigned": "阅片医生",
    "study.due": "截止",
    "study.claim": "领取",
    "study.release": "释放",
    "study.claimedByMe": "您正在阅读此检查（领取有效至 {time}）。",
    "study.claimLost": "您对此检查的领取已失效：{message}",
    "study.timeline": "时间线",
    "event.received": "已接收",
    "event.complete": "接收完成",
    "event.late_instance": "补传图像",
    "event.claimed": "领取",
    "event.released": "释放",
    "event.lease_expired": "领取超时",
    "event.assigned": "指派",
    "event.priority_changed": "优先级变更",
    "event.overdue": "超时提醒",
    "event.escalated": "申请会诊",
    "event.opinion": "会诊意见",
    "event.consultation_withdrawn": "撤回会诊",
    "event.consultation_forwarded": "转上级会诊",
    "event.signed": "已签发",
    "event.delivered": "已送达",
  },
  en: {
    "study.title": "Study",
    "study.back": "Back",
    "study.patientId": "Patient ID",
    "study.date": "Study date",
    "study.accession": "Accession",
    "study.modalities": "Modality",
    "study.series": "Series",
    "study.seriesItem": "Series {number} · {modality} · {count} image(s)",
    "study.noSeries": "This study has no series to show.",
    "study.notFound": "This study was not found, or you may not see it.",
    "study.image": "Image {n} / {total}",
    "study.frame": "Frame {n} / {total}",
    "study.frameSlider": "Frame",
    "study.prevImage": "Previous image",
    "study.nextImage": "Next image",
    "study.prevFrame": "Previous frame",
    "study.nextFrame": "Next frame",
    "study.window": "Window",
    "study.center": "Center",
    "study.width": "Width",
    "study.apply": "Apply",
    "study.preset.default": "Default",
    "study.preset.soft": "Soft tissue",
    "study.preset.lung": "Lung",
    "study.preset.bone": "Bone",
    "study.preset.brain": "Brain",
    "study.preset.wide": "Wide",
    "study.preset.contrast": "High contrast",
    "study.loadingImage": "Loading image…",
    "study.imageFailed": "The image cannot be shown: {message}",
    "study.help": "Wheel or ↑↓: frame/image; ← →: image.",
    "study.note": "This page is for viewing images; measurements, report writing and signing come in a later release.",
    "study.invalidWindow": "Enter a valid center and a width greater than 0.",
    "study.clinic": "Clinic",
    "study.assigned": "Reader",
    "study.due": "Due",
    "study.claim": "Claim",
    "study.release": "Release",
    "study.claimedByMe": "You are reading this study (claim valid until {time}).",
    "study.claimLost": "Your claim on this study has ended: {message}",
    "study.timeline": "Timeline",
    "event.received": "Received",
    "event.complete": "Complete",
    "event.late_instance": "Late image",
    "event.claimed": "Claimed",
    "event.released": "Released",
    "event.lease_expired": "Claim expired",
    "event.assigned": "Assigned",
    "event.priority_changed": "Priority changed",
    "event.overdue": "Overdue alert",
    "event.escalated": "Escalated",
    "event.opinion": "Opinion",
    "event.consultation_withdrawn": "Consultation withdrawn",
    "event.consultation_forwarded": "Consultation forwarded up the chain",
    "event.signed": "Signed",
    "event.delivered": "Delivered",
  },
});

const DICOM_JSON = { Accept: "application/dicom+json" };
const IMAGE_ACCEPT = { Accept: "image/png, image/jpeg;q=0.9" };
const CACHE_SIZE = 24;

// CT windows in Hounsfield units (center, width).
const CT_PRESETS = [
  ["default", null],
  ["soft", [40, 400]],
  ["lung", [-600, 1500]],
  ["bone", [400, 1800]],
  ["brain", [40, 80]],
];

/**
 * Window presets for a modality. CT presets are in Hounsfield units. Projection radiographs
 * (CR/DX/MG…) have no absolute unit, so their presets are relative to the image's own window
 * (from its metadata): wider or narrower around the same center.
 */
export function presetsFor(modality, ownWindow) {
  if (modality === "CT") return CT_PRESETS;
  const presets = [["default", null]];
  if (ownWindow) {
    const [center, width] = ownWindow;
    presets.push(["wide", [center, Math.round(width * 1.5)]]);
    presets.push(["contrast", [center, Math.max(1, Math.round(width * 0.6))]]);
  }
  return presets;
}

function studyBase(uid) {
  return `/dicomweb/studies/${encodeURIComponent(uid)}`;
}

function imageUrl(studyUid, series, instance, frame) {
  const base = `${studyBase(studyUid)}/series/${encodeURIComponent(series)}/instances/${encodeURIComponent(instance.uid)}`;
  return instance.frames > 1 ? `${base}/frames/${frame}/rendered` : `${base}/rendered`;
}

/** A small LRU of object URLs; revokes what falls out and everything on clear(). */
class ObjectUrlCache {
  constructor(size) {
    this.size = size;
    this.map = new Map();
  }

  get(key) {
    const url = this.map.get(key);
    if (url) {
      this.map.delete(key);
      this.map.set(key, url);
    }
    return url;
  }

  set(key, blob) {
    const url = URL.createObjectURL(blob);
    this.map.set(key, url);
    while (this.map.size > this.size) {
      const [oldKey, oldUrl] = this.map.entries().next().value;
      this.map.delete(oldKey);
      URL.revokeObjectURL(oldUrl);
    }
    return url;
  }

  clear() {
    for (const url of this.map.values()) URL.revokeObjectURL(url);
    this.map.clear();
  }
}

function eventLabel(kind) {
  return hasString(`event.${kind}`) ? t(`event.${kind}`) : kind;
}

function timelineBlock(timeline) {
  return h(
    "ol",
    { class: "timeline", id: "study-timeline" },
    timeline.map((e) =>
      h(
        "li",
        { dataset: { kind: e.kind } },
        h("span", { class: "timeline-at" }, formatDateTime(e.at)),
        h("span", { class: "timeline-kind" }, eventLabel(e.kind)),
        e.actor ? h("span", { class: "timeline-actor" }, e.actor) : null,
      ),
    ),
  );
}

function headerBlock(item, claimBox) {
  const fields = [
    [t("study.patientId"), item.patient_id],
    ["", formatSexAge(item.patient_sex, item.patient_birth_date, item.study_date)],
    [t("study.date"), formatDicomDate(item.study_date)],
    [t("study.modalities"), (item.modalities || "").split("\\").filter(Boolean).join(", ")],
    [t("study.accession"), item.accession_number],
    [t("study.clinic"), item.clinic_name || item.clinic],
    [t("study.assigned"), item.assigned_to || ""],
    [t("study.due"), item.due_at ? formatDateTime(item.due_at) : ""],
  ];
  return h(
    "header",
    { class: "study-head" },
    h("a", { class: "back", href: `#${homePath()}` }, `← ${t("study.back")}`),
    h("h1", { id: "study-patient", title: item.patient_name }, formatPersonName(item.patient_name) || item.study_instance_uid),
    h("span", { class: ["chip", `priority-${item.priority}`], id: "study-priority" }, priorityLabel(item.priority)),
    h("span", { class: ["chip", `status-${item.status}`], id: "study-status" }, statusLabel(item.status)),
    h(
      "dl",
      { class: "study-facts" },
      fields
        .filter(([, value]) => value)
        .map(([label, value]) => h("div", {}, label ? h("dt", {}, label) : null, h("dd", {}, value))),
    ),
    h("p", { class: "study-desc", id: "study-description" }, item.study_description),
    claimBox,
  );
}

/**
 * The rendered endpoint's viewport parameter ("w,h"): the on-screen box in device pixels,
 * rounded up to a multiple of 256 (so small layout changes reuse cached images), at most 4096.
 * The hub only ever shrinks an image to fit, so the screen shows every pixel it can; the
 * network carries far fewer bytes than a full-size rendering of a large radiograph.
 */
export function viewportSize(width, height, ratio = 1) {
  const round = (n) => Math.min(4096, Math.max(256, Math.ceil((n * (ratio || 1)) / 256) * 256));
  return `${round(width)},${round(height)}`;
}

/** How often to renew a claim: a third of the time left, between 5 s and 2 min. */
export function heartbeatDelay(leaseExpiresAt, now = Date.now()) {
  const left = new Date(leaseExpiresAt).getTime() - now;
  if (!Number.isFinite(left)) return 60000;
  return Math.min(120000, Math.max(5000, Math.floor(left / 3)));
}

async function renderStudy({ root, params, query, signal, user }) {
  const uid = params.uid;
  const cache = new ObjectUrlCache(CACHE_SIZE);
  const thumbs = [];
  let stopHeartbeat = () => {};
  const cleanup = () => {
    stopHeartbeat();
    cache.clear();
    for (const url of thumbs) URL.revokeObjectURL(url);
    document.removeEventListener("keydown", onKey);
  };

  let detail;
  try {
    detail = await apiGet(`/api/v1/studies/${encodeURIComponent(uid)}`, undefined, { signal });
  } catch (err) {
    if (err.status === 404 || err.status === 403 || err.status === 422) {
      root.appendChild(messageBox("error", t("study.notFound")));
      return cleanup;
    }
    throw err;
  }
  let item = detail.study;
  const claimBox = h("div", { class: "claim-box", id: "claim-box", "aria-live": "polite" });
  const headSlot = h("div", { class: "study-head-slot" });
  const timelineSlot = h("div", { class: "timeline-slot" });
  let heartbeatTimer = null;
  stopHeartbeat = () => clearTimeout(heartbeatTimer);

  function renderHead() {
    replaceChildren(headSlot, headerBlock(item, claimBox));
  }

  function renderClaim(message) {
    clearTimeout(heartbeatTimer);
    const mine = item.status === "in_progress" && item.assigned_to === user.username;
    const buttons = [];
    if (can("study.claim", user) && item.status === "unread") {
      buttons.push(h("button", { type: "button", id: "study-claim", class: "primary", on: { click: () => claimAction("claim") } }, t("study.claim")));
    }
    if (can("study.claim", user) && mine) {
      buttons.push(h("button", { type: "button", id: "study-release", on: { click: () => claimAction("release") } }, t("study.release")));
    }
    replaceChildren(
      claimBox,
      buttons,
      mine && item.lease_expires_at ? h("span", { class: "claim-note", id: "claim-note" }, t("study.claimedByMe", { time: formatDateTime(item.lease_expires_at) })) : null,
      message || null,
    );
    if (mine && item.lease_expires_at) heartbeatTimer = setTimeout(heartbeat, heartbeatDelay(item.lease_expires_at));
  }

  async function refreshDetail() {
    const fresh = await apiGet(`/api/v1/studies/${encodeURIComponent(uid)}`, undefined, { signal });
    item = fresh.study;
    renderHead();
    replaceChildren(timelineSlot, timelineBlock(fresh.timeline || []));
  }

  async function claimAction(action) {
    try {
      item = await apiPost(`/api/v1/studies/${encodeURIComponent(uid)}/${action}`, undefined, { signal });
      await refreshDetail();
      renderClaim();
    } catch (err) {
      if (err.name === "AbortError") return;
      renderClaim(messageBox("error", err.message));
    }
  }

  async function heartbeat() {
    try {
      item = await apiPost(`/api/v1/studies/${encodeURIComponent(uid)}/heartbeat`, undefined, { signal });
      renderClaim();
    } catch (err) {
      if (err.name === "AbortError") return;
      const lost = messageBox("error", t("study.claimLost", { message: err.message }));
      try {
        await refreshDetail(); // show the study as it is now
      } catch (again) {
        if (again.name === "AbortError") return;
      }
      renderClaim(lost);
    }
  }

  const seriesJson = await apiGet(`${studyBase(uid)}/series`, { includefield: "all" }, { signal, headers: DICOM_JSON });
  const seriesList = (seriesJson || [])
    .map((s) => ({
      uid: first(s, TAG.SeriesInstanceUID),
      number: number(s, TAG.SeriesNumber),
      modality: first(s, TAG.Modality),
      description: first(s, TAG.SeriesDescription),
      count: number(s, TAG.NumberOfSeriesRelatedInstances) || 0,
    }))
    .filter((s) => s.uid)
    .sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9));

  // Viewer state.
  const view = { series: null, instances: [], index: 0, frame: 1, window: null, preset: "default", ownWindow: null };
  let loadSeq = 0;

  const image = h("img", { class: "viewer-image", id: "viewer-image", alt: "" });
  const imageStatus = h("div", { class: "viewer-status", id: "viewer-status", "aria-live": "polite" });
  const position = h("span", { class: "viewer-position", id: "viewer-position" });
  const framePosition = h("span", { class: "viewer-position", id: "viewer-frame" });
  const frameSlider = h("input", { type: "range", id: "frame-slider", min: "1", max: "1", value: "1", class: "frame-slider", "aria-label": t("study.frameSlider") });
  const presetBar = h("div", { class: "presets", role: "group", "aria-label": t("study.window") });
  const centerInput = h("input", { type: "number", id: "window-center", step: "1", class: "window-input", "aria-label": t("study.center") });
  const widthInput = h("input", { type: "number", id: "window-width", step: "1", min: "1", class: "window-input", "aria-label": t("study.width") });
  const seriesNav = h("nav", { class: "series-list", id: "series-list", "aria-label": t("study.series") });

  const prevImage = h("button", { type: "button", id: "prev-image", on: { click: () => step(-1) } }, `‹ ${t("study.prevImage")}`);
  const nextImage = h("button", { type: "button", id: "next-image", on: { click: () => step(1) } }, `${t("study.nextImage")} ›`);
  frameSlider.addEventListener("input", () => showFrame(Number(frameSlider.value)));

  const windowForm = h(
    "form",
    { class: "window-form", id: "window-form", novalidate: true },
    h("label", { for: "window-center" }, t("study.center")),
    centerInput,
    h("label", { for: "window-width" }, t("study.width")),
    widthInput,
    h("button", { type: "submit" }, t("study.apply")),
  );
  windowForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const center = Number(centerInput.value);
    const width = Number(widthInput.value);
    if (centerInput.value === "" || widthInput.value === "" || !Number.isFinite(center) || !(width > 0)) {
      replaceChildren(imageStatus, messageBox("error", t("study.invalidWindow")));
      return;
    }
    setWindow("custom", [center, width]);
  });

  function currentInstance() {
    return view.instances[view.index];
  }

  /** Keep the position in the URL: a reload, a bookmark or a language switch returns to it. */
  function remember() {
    setQuery({
      series: view.series ? view.series.uid : undefined,
      image: view.index ? view.index + 1 : undefined,
      frame: view.frame > 1 ? view.frame : undefined,
      window: view.window ? view.window.join(",") : undefined,
      preset: view.window ? view.preset : undefined,
    });
  }

  function renderPresets() {
    const modality = view.series ? view.series.modality : "";
    replaceChildren(
      presetBar,
      presetsFor(modality, view.ownWindow).map(([key, win]) =>
        h(
          "button",
          {
            type: "button",
            class: "preset",
            dataset: { preset: key },
            "aria-pressed": view.preset === key ? "true" : "false",
            on: { click: () => setWindow(key, win) },
          },
          t(`study.preset.${key}`),
        ),
      ),
    );
  }

  function setWindow(key, win) {
    view.preset = key;
    view.window = win;
    if (win) {
      centerInput.value = String(win[0]);
      widthInput.value = String(win[1]);
    }
    renderPresets();
    showImage();
  }

  function updatePosition() {
    const inst = currentInstance();
    position.textContent = view.instances.length ? t("study.image", { n: view.index + 1, total: view.instances.length }) : "";
    prevImage.disabled = view.index <= 0;
    nextImage.disabled = view.index >= view.instances.length - 1;
    const frames = inst ? inst.frames : 1;
    frameSlider.hidden = frames <= 1;
    framePosition.hidden = frames <= 1;
    frameSlider.max = String(Math.max(1, frames));
    frameSlider.value = String(view.frame);
    framePosition.textContent = frames > 1 ? t("study.frame", { n: view.frame, total: frames }) : "";
  }

  async function fetchImage(inst, frame) {
    const url = imageUrl(uid, view.series.uid, inst, frame);
    const win = view.window ? `${view.window[0]},${view.window[1]},linear` : undefined;
    const size = viewportSize(viewport.clientWidth, viewport.clientHeight, window.devicePixelRatio);
    const key = `${url}|${win || ""}|${size}`;
    const cached = cache.get(key);
    if (cached) return cached;
    const blob = await apiBlob(url, { window: win, viewport: size }, { signal, headers: IMAGE_ACCEPT });
    return cache.set(key, blob);
  }

  async function showImage() {
    updatePosition();
    remember();
    const inst = currentInstance();
    if (!inst) return;
    const seq = ++loadSeq;
    // Never leave another image on screen while this one loads: a different image (or series)
    // is blanked at once; the same image with a new window is dimmed until it arrives.
    if (image.dataset.sop !== inst.uid || image.dataset.frame !== String(view.frame)) {
      image.removeAttribute("src");
      delete image.dataset.sop;
      delete image.dataset.frame;
    } else {
      image.classList.add("stale");
    }
    replaceChildren(imageStatus, h("span", { class: "loading" }, t("study.loadingImage")));
    try {
      const url = await fetchImage(inst, view.frame);
      if (seq !== loadSeq) return;
      image.src = url;
      image.dataset.sop = inst.uid;
      image.dataset.frame = String(view.frame);
      image.dataset.window = view.window ? view.window.join(",") : "";
      image.classList.remove("stale");
      replaceChildren(imageStatus);
      prefetch();
    } catch (err) {
      if (err.name === "AbortError" || seq !== loadSeq) return;
      replaceChildren(imageStatus, messageBox("error", t("study.imageFailed", { message: err.message })));
    }
  }

  function prefetch() {
    const inst = currentInstance();
    const next = inst && inst.frames > view.frame ? [inst, view.frame + 1] : view.instances[view.index + 1] ? [view.instances[view.index + 1], 1] : null;
    if (next) fetchImage(next[0], next[1]).catch(() => {});
  }

  async function loadOwnWindow(inst) {
    // The image's own VOI window (for relative presets on projection radiographs).
    if (!view.series || view.series.modality === "CT") return null;
    try {
      const meta = await apiGet(
        `${studyBase(uid)}/series/${encodeURIComponent(view.series.uid)}/instances/${encodeURIComponent(inst.uid)}/metadata`,
        undefined,
        { signal, headers: DICOM_JSON },
      );
      const m = Array.isArray(meta) ? meta[0] : null;
      const center = number(m, TAG.WindowCenter);
      const width = number(m, TAG.WindowWidth);
      return center !== null && width !== null && width > 0 ? [center, width] : null;
    } catch (err) {
      if (err.name === "AbortError") throw err;
      return null;
    }
  }

  function step(delta) {
    const target = view.index + delta;
    if (target < 0 || target >= view.instances.length) return;
    view.index = target;
    view.frame = 1;
    showImage();
  }

  function showFrame(frame) {
    const inst = currentInstance();
    if (!inst || frame < 1 || frame > inst.frames) return;
    view.frame = frame;
    showImage();
  }

  /** Wheel and ↑/↓ move through frames of a multi-frame image, else through images. */
  function scroll(delta) {
    const inst = currentInstance();
    if (inst && inst.frames > 1) {
      const frame = view.frame + delta;
      if (frame >= 1 && frame <= inst.frames) showFrame(frame);
      return;
    }
    step(delta);
  }

  function onKey(event) {
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
    const actions = { ArrowLeft: () => step(-1), ArrowRight: () => step(1), ArrowUp: () => scroll(-1), ArrowDown: () => scroll(1), PageUp: () => step(-1), PageDown: () => step(1) };
    const action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  }
  document.addEventListener("keydown", onKey);

  let wheelAt = 0;
  const viewport = h("div", { class: "viewport", id: "viewport" }, image);
  viewport.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      const now = performance.now();
      if (now - wheelAt < 40) return;
      wheelAt = now;
      scroll(event.deltaY > 0 ? 1 : -1);
    },
    { passive: false },
  );

  async function openSeries(series, start = {}) {
    view.series = series;
    for (const b of seriesNav.querySelectorAll("button")) {
      b.setAttribute("aria-current", b.dataset.uid === series.uid ? "true" : "false");
    }
    image.removeAttribute("src");
    delete image.dataset.sop;
    const json = await apiGet(`${studyBase(uid)}/series/${encodeURIComponent(series.uid)}/instances`, undefined, { signal, headers: DICOM_JSON });
    view.instances = (json || [])
      .map((i) => ({
        uid: first(i, TAG.SOPInstanceUID),
        number: number(i, TAG.InstanceNumber),
        frames: number(i, TAG.NumberOfFrames) || 1,
      }))
      .filter((i) => i.uid)
      .sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9));
    const index = Number.isInteger(start.image) ? start.image - 1 : 0;
    view.index = index >= 0 && index < view.instances.length ? index : 0;
    const frames = view.instances.length ? view.instances[view.index].frames : 1;
    view.frame = Number.isInteger(start.frame) && start.frame >= 1 && start.frame <= frames ? start.frame : 1;
    view.preset = start.window ? start.preset || "custom" : "default";
    view.window = start.window || null;
    view.ownWindow = view.instances.length ? await loadOwnWindow(view.instances[view.index]) : null;
    const shown = view.window || view.ownWindow;
    centerInput.value = shown ? String(shown[0]) : "";
    widthInput.value = shown ? String(shown[1]) : "";
    renderPresets();
    await showImage();
  }

  async function loadThumbnail(series, img) {
    try {
      const blob = await apiBlob(`${studyBase(uid)}/series/${encodeURIComponent(series.uid)}/thumbnail`, undefined, { signal, headers: IMAGE_ACCEPT });
      const url = URL.createObjectURL(blob);
      thumbs.push(url);
      img.src = url;
    } catch (err) {
      if (err.name !== "AbortError") img.classList.add("thumb-missing");
    }
  }

  for (const series of seriesList) {
    const thumb = h("img", { class: "thumb", alt: "" });
    seriesNav.appendChild(
      h(
        "button",
        { type: "button", class: "series-item", dataset: { uid: series.uid }, on: { click: () => openSeries(series).catch(showError) } },
        thumb,
        h(
          "span",
          { class: "series-text" },
          h("span", { class: "series-title" }, t("study.seriesItem", { number: series.number ?? "—", modality: series.modality, count: formatNumber(series.count) })),
          series.description ? h("span", { class: "series-desc" }, series.description) : null,
        ),
      ),
    );
    loadThumbnail(series, thumb);
  }

  function showError(err) {
    if (err.name !== "AbortError") replaceChildren(imageStatus, messageBox("error", err.message));
  }

  root.appendChild(
    h(
      "section",
      { class: "study-page" },
      headSlot,
      h(
        "div",
        { class: "study-body" },
        h(
          "aside",
          { class: "series-pane" },
          h("h2", {}, t("study.series")),
          seriesNav,
          seriesList.length ? null : messageBox("info", t("study.noSeries")),
          h("h2", {}, t("study.timeline")),
          timelineSlot,
        ),
        h(
          "div",
          { class: "viewer" },
          h(
            "div",
            { class: "viewer-toolbar" },
            prevImage,
            position,
            nextImage,
            framePosition,
            frameSlider,
            h("span", { class: "toolbar-label" }, t("study.window")),
            presetBar,
            windowForm,
          ),
          imageStatus,
          viewport,
          h("p", { class: "viewer-help" }, t("study.help"), " ", t("study.note")),
        ),
      ),
    ),
  );
  renderHead();
  renderClaim();
  replaceChildren(timelineSlot, timelineBlock(detail.timeline || []));
  if (seriesList.length) {
    const wanted = seriesList.find((s) => s.uid === query.get("series")) || seriesList[0];
    const win = (query.get("window") || "").split(",").map(Number);
    const start = {
      image: Number(query.get("image")) || 1,
      frame: Number(query.get("frame")) || 1,
      window: win.length === 2 && win.every(Number.isFinite) && win[1] > 0 ? win : null,
      preset: /^[a-z]{1,16}$/.test(query.get("preset") || "") ? query.get("preset") : null,
    };
    openSeries(wanted, start).catch(showError);
  }
  return cleanup;
}

registerRoute({
  path: "/study/:uid",
  title: "study.title",
  roles: ["radiologist", "consultant", "admin", "clinic_staff"],
  render: renderStudy,
});
