// Study page (#/study/<StudyInstanceUID>): patient/study header with status, claim and timeline
// (GET /api/v1/studies/{uid}; a held claim is kept alive with heartbeats), series thumbnails on
// the left, the diagnostic viewer in the centre and an empty slot on the right for the report
// pane. The viewer is the Cornerstone3D bundle (viewer_static/viewer/viewer.js, built from
// viewer/ at the repository root): frames from WADO-RS in their stored transfer syntax, decoded
// in the browser; the series' WADO-RS /metadata fetched once. This file builds all of its UI
// (toolbar, overlays, measurement list, help) with h() and t(); the bundle only renders.

import { addStrings, formatDateTime, formatDicomDate, getLanguage, hasString, t } from "../i18n.js";
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
import { TAG, first, number, personName, values } from "../dicomjson.js";
import { mountReportPane } from "./report_pane.js";

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

addStrings({
  "zh-CN": {
    "viewer.loadingBundle": "正在加载阅片器…",
    "viewer.bundleFailed": "阅片器无法加载：{message}",
    "viewer.loading": "正在加载图像…",
    "viewer.decodeFailed": "此图像无法解码或显示：{message}",
    "viewer.wrongStudy": "此图像不属于本检查，已拒绝显示。",
    "viewer.empty": "将左侧序列拖到此处",
    "viewer.noImages": "此序列没有图像（例如报告文档 PDF 或结构化报告）。报告在右侧报告栏查看。",
    "viewer.tools": "工具",
    "viewer.tool.wl": "窗宽窗位",
    "viewer.tool.pan": "平移",
    "viewer.tool.zoom": "缩放",
    "viewer.tool.length": "长度",
    "viewer.tool.angle": "角度",
    "viewer.tool.ellipse": "椭圆 ROI",
    "viewer.window": "窗",
    "viewer.center": "窗位",
    "viewer.width": "窗宽",
    "viewer.apply": "应用",
    "viewer.invalidWindow": "请输入有效的窗位和窗宽（窗宽大于 0）。",
    "viewer.preset.default": "默认",
    "viewer.preset.lung": "肺窗",
    "viewer.preset.mediastinum": "纵隔窗",
    "viewer.preset.bone": "骨窗",
    "viewer.preset.brain": "脑窗",
    "viewer.preset.abdomen": "腹部窗",
    "viewer.preset.wide": "宽窗",
    "viewer.preset.contrast": "高对比",
    "viewer.preset.custom": "自定义",
    "viewer.fit": "适应窗口",
    "viewer.actual": "1:1",
    "viewer.invert": "反相",
    "viewer.rotate": "旋转 90°",
    "viewer.flipH": "水平翻转",
    "viewer.flipV": "垂直翻转",
    "viewer.reset": "复位",
    "viewer.layout": "布局",
    "viewer.cine": "电影播放",
    "viewer.stop": "停止",
    "viewer.fps": "帧/秒",
    "viewer.help": "快捷键",
    "viewer.prev": "上一幅",
    "viewer.next": "下一幅",
    "viewer.slider": "图像/帧",
    "viewer.position": "图像 {n} / {total}",
    "viewer.framePosition": "帧 {n} / {total}",
    "viewer.overlayImage": "图像 {n}/{total}",
    "viewer.overlayFrame": "帧 {n}/{total}",
    "viewer.overlaySeries": "序列 {number}",
    "viewer.overlayWindow": "窗位 {center} 窗宽 {width}",
    "viewer.overlayZoom": "缩放 {zoom}%",
    "viewer.measurements": "测量",
    "viewer.noMeasurements": "没有测量。选择长度、角度或椭圆 ROI 工具后在图像上拖动。",
    "viewer.clearMeasurements": "全部删除",
    "viewer.delete": "删除",
    "viewer.m.length": "长度",
    "viewer.m.angle": "角度",
    "viewer.m.ellipse": "椭圆 ROI",
    "viewer.m.stats": "均值 {mean} {unit}，标准差 {sd} {unit}",
    "viewer.atDetector": "（探测器平面）",
    "viewer.pixels": "（未校准）",
    "viewer.loaded": "已加载 {done}/{total}",
    "viewer.helpTitle": "快捷键",
    "viewer.key.scroll": "滚轮、↑ ↓：上一幅/下一幅（含多帧图像的帧）",
    "viewer.key.image": "← →：上一个/下一个图像（跳过帧）；Home / End：第一幅/最后一幅",
    "viewer.key.zoom": "Ctrl+滚轮或右键拖动：缩放；中键拖动：平移；+ / -：放大/缩小",
    "viewer.key.tools": "W 窗宽窗位，P 平移，Z 缩放，L 长度，A 角度，E 椭圆 ROI（左键使用）",
    "viewer.key.presets": "0 默认窗，1–5 预设窗",
    "viewer.key.view": "F 适应窗口，O 原始大小 1:1，I 反相，R 旋转，H 水平翻转，V 垂直翻转",
    "viewer.key.cine": "C 电影播放/停止，[ ] 降低/提高帧率",
    "viewer.key.reset": "Esc 复位（窗、缩放、方向）；Delete 删除最后一个测量；? 显示本帮助",
    "viewer.key.sync": "S 同步滚动（两个同方向的 CT 序列，例如与既往检查对比）",
    "viewer.sync": "同步滚动",
    "viewer.syncTitle": "同方向的断层序列一起滚动（先把两边滚到同一解剖位置，再打开）",
    "viewer.prior": "既往检查 {date}",
    "viewer.wrongPatient": "此图像属于另一位患者，已拒绝显示。",
    "study.priors": "既往检查",
    "study.noPriors": "没有此患者的其他检查。",
    "study.priorsFailed": "既往检查无法加载：{message}",
    "study.compare": "并排对比",
    "study.priorSeriesFailed": "既往检查的序列无法加载：{message}",
    "viewer.seriesNotFound": "未找到此序列，或您无权查看。",
  },
  en: {
    "viewer.loadingBundle": "Loading the viewer…",
    "viewer.bundleFailed": "The viewer cannot be loaded: {message}",
    "viewer.loading": "Loading image…",
    "viewer.decodeFailed": "This image cannot be decoded or shown: {message}",
    "viewer.wrongStudy": "This image does not belong to this study; it is not shown.",
    "viewer.empty": "Drag a series here",
    "viewer.noImages": "This series has no images (a report document, PDF or structured report, for example). Reports are read in the report pane.",
    "viewer.tools": "Tools",
    "viewer.tool.wl": "Window/level",
    "viewer.tool.pan": "Pan",
    "viewer.tool.zoom": "Zoom",
    "viewer.tool.length": "Length",
    "viewer.tool.angle": "Angle",
    "viewer.tool.ellipse": "Ellipse ROI",
    "viewer.window": "Window",
    "viewer.center": "Center",
    "viewer.width": "Width",
    "viewer.apply": "Apply",
    "viewer.invalidWindow": "Enter a valid center and a width greater than 0.",
    "viewer.preset.default": "Default",
    "viewer.preset.lung": "Lung",
    "viewer.preset.mediastinum": "Mediastinum",
    "viewer.preset.bone": "Bone",
    "viewer.preset.brain": "Brain",
    "viewer.preset.abdomen": "Abdomen",
    "viewer.preset.wide": "Wide",
    "viewer.preset.contrast": "High contrast",
    "viewer.preset.custom": "Custom",
    "viewer.fit": "Fit",
    "viewer.actual": "1:1",
    "viewer.invert": "Invert",
    "viewer.rotate": "Rotate 90°",
    "viewer.flipH": "Flip horizontal",
    "viewer.flipV": "Flip vertical",
    "viewer.reset": "Reset",
    "viewer.layout": "Layout",
    "viewer.cine": "Cine",
    "viewer.stop": "Stop",
    "viewer.fps": "fps",
    "viewer.help": "Shortcuts",
    "viewer.prev": "Previous image",
    "viewer.next": "Next image",
    "viewer.slider": "Image/frame",
    "viewer.position": "Image {n} / {total}",
    "viewer.framePosition": "Frame {n} / {total}",
    "viewer.overlayImage": "Im {n}/{total}",
    "viewer.overlayFrame": "Fr {n}/{total}",
    "viewer.overlaySeries": "Se {number}",
    "viewer.overlayWindow": "C {center} W {width}",
    "viewer.overlayZoom": "Zoom {zoom}%",
    "viewer.measurements": "Measurements",
    "viewer.noMeasurements": "No measurements. Pick the length, angle or ellipse tool and drag on the image.",
    "viewer.clearMeasurements": "Delete all",
    "viewer.delete": "Delete",
    "viewer.m.length": "Length",
    "viewer.m.angle": "Angle",
    "viewer.m.ellipse": "Ellipse ROI",
    "viewer.m.stats": "mean {mean} {unit}, SD {sd} {unit}",
    "viewer.atDetector": "(at detector)",
    "viewer.pixels": "(uncalibrated)",
    "viewer.loaded": "Loaded {done}/{total}",
    "viewer.helpTitle": "Keyboard shortcuts",
    "viewer.key.scroll": "Wheel, ↑ ↓: previous/next image (frames of a multi-frame image included)",
    "viewer.key.image": "← →: previous/next image (skipping frames); Home / End: first/last",
    "viewer.key.zoom": "Ctrl+wheel or right drag: zoom; middle drag: pan; + / -: zoom in/out",
    "viewer.key.tools": "W window/level, P pan, Z zoom, L length, A angle, E ellipse ROI (left button)",
    "viewer.key.presets": "0 default window, 1–5 window presets",
    "viewer.key.view": "F fit, O original size 1:1, I invert, R rotate, H flip horizontal, V flip vertical",
    "viewer.key.cine": "C cine play/stop, [ ] slower/faster",
    "viewer.key.reset": "Esc reset (window, zoom, orientation); Delete removes the last measurement; ? shows this help",
    "viewer.key.sync": "S link scrolling (two CT series of the same orientation, e.g. against a prior)",
    "viewer.sync": "Link scrolling",
    "viewer.syncTitle": "Cross-sectional series of the same orientation scroll together (scroll both to the same anatomy, then switch it on)",
    "viewer.prior": "PRIOR {date}",
    "viewer.wrongPatient": "This image belongs to another patient; it is not shown.",
    "study.priors": "Prior studies",
    "study.noPriors": "No other studies of this patient.",
    "study.priorsFailed": "Prior studies cannot be loaded: {message}",
    "study.compare": "Compare side by side",
    "study.priorSeriesFailed": "The prior's series cannot be loaded: {message}",
    "viewer.seriesNotFound": "This series was not found, or you may not see it.",
  },
});

const DICOM_JSON = { Accept: "application/dicom+json" };
const THUMB_ACCEPT = { Accept: "image/png, image/jpeg;q=0.9" };
const DOCUMENT_MODALITIES = new Map([["DOC", "PDF"], ["SR", "SR"], ["KO", "KO"], ["PR", "PR"]]); // no pixels: a label for a thumbnail
// Decoded pixels kept in the browser (Cornerstone's cache evicts the least recently used images
// beyond it); prefetching stops at the budget, so a huge series never fills the tab's memory.
const CACHE_BYTES = 1024 * 1024 * 1024;
const PREFETCH_BYTES = 768 * 1024 * 1024;
const LAYOUTS = { "1x1": [1, 1], "1x2": [1, 2], "2x2": [2, 2] };
// Thumbnails wait for the first image: at most THUMBS_AFTER_MS once its load has begun (the page's
// bundle and the series' first headers come first), and THUMBS_LATEST_MS from the page's start
// whatever happens (a layout whose series are all gone shows no image at all).
const THUMBS_AFTER_MS = 1500;
const THUMBS_LATEST_MS = 10000;
const TOOL_KEYS = ["wl", "pan", "zoom", "length", "angle", "ellipse"];

// CT windows in Hounsfield units (center, width).
const CT_PRESETS = [
  ["lung", [-600, 1500]],
  ["mediastinum", [40, 400]],
  ["bone", [400, 1800]],
  ["brain", [40, 80]],
  ["abdomen", [60, 400]],
];

/**
 * Window presets for a modality (after "default", the image's own window). CT presets are in
 * Hounsfield units. Projection radiographs (CR/DX/MG…) and other modalities have no absolute
 * unit, so their presets are relative to the image's own window: wider or narrower around the
 * same center.
 */
export function presetsFor(modality, ownWindow) {
  const presets = [["default", null]];
  if (modality === "CT") return presets.concat(CT_PRESETS);
  if (ownWindow) {
    const [center, width] = ownWindow;
    presets.push(["wide", [center, Math.round(width * 1.5)]]);
    presets.push(["contrast", [center, Math.max(1, Math.round(width * 0.6))]]);
  }
  return presets;
}

const RENDERER_KEY = "imaging-hub.viewer.renderer";

/** "gpu" or "cpu" when this browser's storage forces a rendering path, else "auto". */
function rendererChoice() {
  try {
    const value = window.localStorage.getItem(RENDERER_KEY);
    return value === "gpu" || value === "cpu" ? value : "auto";
  } catch {
    return "auto";
  }
}

function studyBase(uid) {
  return `/dicomweb/studies/${encodeURIComponent(uid)}`;
}

function seriesBase(studyUid, seriesUid) {
  return `${studyBase(studyUid)}/series/${encodeURIComponent(seriesUid)}`;
}

/** A number for the overlay and the measurement list: 3 significant digits, at most 2 decimals. */
export function formatMeasure(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "";
  const abs = Math.abs(value);
  const digits = abs >= 100 ? 1 : 2;
  return value.toFixed(digits);
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
        // A consultant's opinion is read in the timeline too (text, never markup).
        e.kind === "opinion" && e.detail && typeof e.detail.opinion === "string"
          ? h("blockquote", { class: "timeline-opinion" }, e.detail.opinion)
          : null,
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

/** How often to renew a claim: a third of the time left, between 5 s and 2 min. */
export function heartbeatDelay(leaseExpiresAt, now = Date.now()) {
  const left = new Date(leaseExpiresAt).getTime() - now;
  if (!Number.isFinite(left)) return 60000;
  return Math.min(120000, Math.max(5000, Math.floor(left / 3)));
}

async function renderStudy({ root, params, query, signal, user }) {
  const uid = params.uid;
  const thumbs = [];
  const disposers = [];
  let stopHeartbeat = () => {};
  let viewer = null;
  const cleanup = () => {
    stopHeartbeat();
    for (const off of disposers) off();
    for (const url of thumbs) URL.revokeObjectURL(url);
    if (viewer) viewer.destroy();
    viewer = null;
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
  // The viewer bundle (cached, revalidated) loads and initialises while the page asks for the
  // rest; awaited where the viewer starts.
  // Images are drawn with WebGL on a GPU, on the CPU where WebGL is a software rasteriser (the
  // bundle decides; localStorage "imaging-hub.viewer.renderer" = "gpu" or "cpu" forces one).
  const bundle = import("../viewer/viewer.js").then(async (mod) => {
    await mod.initViewer({ maxCacheBytes: CACHE_BYTES, renderer: rendererChoice() });
    return mod;
  });
  bundle.catch(() => {});
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

  async function studySeries(studyUid) {
    const json = await apiGet(`${studyBase(studyUid)}/series`, { includefield: "all" }, { signal, headers: DICOM_JSON });
    return (json || [])
      .map((s) => ({
        uid: first(s, TAG.SeriesInstanceUID),
        study: studyUid,
        number: number(s, TAG.SeriesNumber),
        modality: first(s, TAG.Modality),
        description: first(s, TAG.SeriesDescription),
        count: number(s, TAG.NumberOfSeriesRelatedInstances) || 0,
      }))
      .filter((s) => s.uid)
      .sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9));
  }
  const seriesList = await studySeries(uid);
  const seriesByUid = new Map(seriesList.map((s) => [s.uid, s]));
  // Prior studies of the same patient (QIDO-RS by Patient ID, scoped by the hub): uid -> study,
  // and the series of the priors opened so far.
  const priorStudies = new Map();
  const priorSeries = new Map();
  const priorBoxes = new Map(); // listed prior uid -> the element its series are listed in
  const priorLists = new Map(); // prior uid -> Promise<series list>
  const openedPriors = []; // priors whose series are listed, in the order opened (kept in the URL)
  const seriesInfo = (seriesUid) => seriesByUid.get(seriesUid) || priorSeries.get(seriesUid);

  // ---- Layout: series on the left, the viewer grid in the centre, the report slot right ----
  const seriesNav = h("nav", { class: "series-list", id: "series-list", "aria-label": t("study.series") });
  const priorsBox = h("div", { class: "priors", id: "priors", "aria-live": "polite" });
  const statusBox = h("div", { class: "viewer-status", id: "viewer-status", "aria-live": "polite" });
  const grid = h("div", { class: "viewer-grid", id: "viewer-grid" });
  const position = h("span", { class: "viewer-position", id: "viewer-position" });
  const framePosition = h("span", { class: "viewer-position", id: "viewer-frame" });
  const slider = h("input", { type: "range", id: "image-slider", class: "image-slider", min: "1", max: "1", value: "1", "aria-label": t("viewer.slider") });
  const presetBar = h("div", { class: "presets", role: "group", "aria-label": t("viewer.window") });
  const centerInput = h("input", { type: "number", id: "window-center", step: "any", class: "window-input", "aria-label": t("viewer.center") });
  const widthInput = h("input", { type: "number", id: "window-width", step: "any", min: "0", class: "window-input", "aria-label": t("viewer.width") });
  const prevButton = h("button", { type: "button", id: "prev-image", on: { click: () => withActive((id) => stepInstance(id, -1)) } }, `‹ ${t("viewer.prev")}`);
  const nextButton = h("button", { type: "button", id: "next-image", on: { click: () => withActive((id) => stepInstance(id, 1)) } }, `${t("viewer.next")} ›`);
  const measureList = h("ul", { class: "measurements", id: "measurements", "data-testid": "measurements" });
  const fpsInput = h("input", { type: "number", id: "cine-fps", class: "fps-input", min: "1", max: "60", step: "1", value: "15", "aria-label": t("viewer.fps") });
  const cineButton = h("button", { type: "button", id: "cine-toggle", "aria-pressed": "false", on: { click: () => toggleCine() } }, `▶ ${t("viewer.cine")}`);
  let syncOn = true;
  const syncButton = h(
    "button",
    { type: "button", id: "sync-scroll", "data-testid": "sync-scroll", title: t("viewer.syncTitle"), "aria-pressed": "true", on: { click: () => toggleSync() } },
    t("viewer.sync"),
  );
  const helpBox = h(
    "div",
    { class: "help-overlay", id: "viewer-help", role: "dialog", "aria-modal": "false", "aria-label": t("viewer.helpTitle"), hidden: true },
    h("h2", {}, t("viewer.helpTitle")),
    h(
      "ul",
      {},
      ["scroll", "image", "zoom", "tools", "presets", "view", "cine", "sync", "reset"].map((k) => h("li", {}, t(`viewer.key.${k}`))),
    ),
    h("button", { type: "button", on: { click: () => (helpBox.hidden = true) } }, t("common.close")),
  );

  const toolButtons = TOOL_KEYS.map((key) =>
    h(
      "button",
      {
        type: "button",
        class: "tool",
        id: `tool-${key}`,
        "data-testid": `tool-${key}`,
        dataset: { tool: key },
        "aria-pressed": key === "wl" ? "true" : "false",
        on: { click: () => selectTool(key) },
      },
      t(`viewer.tool.${key}`),
    ),
  );
  const layoutButtons = Object.keys(LAYOUTS).map((key) =>
    h("button", { type: "button", class: "layout", dataset: { layout: key }, "aria-pressed": "false", on: { click: () => setLayout(key) } }, key.replace("x", "×")),
  );
  const action = (id, label, fn) => h("button", { type: "button", id, on: { click: () => withActive(fn) } }, label);

  const windowForm = h(
    "form",
    { class: "window-form", id: "window-form", novalidate: true },
    h("label", { for: "window-center" }, t("viewer.center")),
    centerInput,
    h("label", { for: "window-width" }, t("viewer.width")),
    widthInput,
    h("button", { type: "submit" }, t("viewer.apply")),
  );
  windowForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const center = Number(centerInput.value);
    const width = Number(widthInput.value);
    if (centerInput.value === "" || widthInput.value === "" || !Number.isFinite(center) || !(width > 0)) {
      replaceChildren(statusBox, messageBox("error", t("viewer.invalidWindow")));
      return;
    }
    replaceChildren(statusBox);
    applyWindow("custom", [center, width]);
  });

  root.appendChild(
    h(
      "section",
      { class: "study-page reading" },
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
          h("h2", {}, t("study.priors")),
          priorsBox,
          h("h2", {}, t("study.timeline")),
          timelineSlot,
        ),
        h(
          "div",
          { class: "viewer" },
          h(
            "div",
            { class: "viewer-toolbar", role: "toolbar", "aria-label": t("viewer.tools") },
            h("div", { class: "tool-group", role: "group" }, toolButtons),
            h("div", { class: "tool-group", role: "group" },
              action("view-fit", t("viewer.fit"), (id) => viewer.fit(id)),
              action("view-actual", t("viewer.actual"), (id) => viewer.actualSize(id)),
              action("view-invert", t("viewer.invert"), (id) => viewer.setInvert(id)),
              action("view-rotate", t("viewer.rotate"), (id) => viewer.rotate(id, 90)),
              action("view-flip-h", t("viewer.flipH"), (id) => viewer.flip(id, true)),
              action("view-flip-v", t("viewer.flipV"), (id) => viewer.flip(id, false)),
              action("view-reset", t("viewer.reset"), (id) => resetView(id)),
            ),
            h("button", { type: "button", id: "help-toggle", title: t("viewer.help"), "aria-label": t("viewer.help"), on: { click: () => (helpBox.hidden = !helpBox.hidden) } }, "?"),
          ),
          h(
            "div",
            { class: "viewer-toolbar viewer-toolbar-2" },
            h("div", { class: "tool-group", role: "group", "aria-label": t("viewer.window") }, h("span", { class: "toolbar-label" }, t("viewer.window")), presetBar, windowForm),
            h("div", { class: "tool-group", role: "group", "aria-label": t("viewer.layout") }, layoutButtons, syncButton),
            h("div", { class: "tool-group", role: "group" }, cineButton, fpsInput, h("label", { for: "cine-fps", class: "muted" }, t("viewer.fps"))),
          ),
          statusBox,
          h("div", { class: "viewer-stage" }, grid, helpBox),
          h(
            "div",
            { class: "viewer-nav" },
            prevButton,
            position,
            nextButton,
            framePosition,
            slider,
          ),
          h(
            "section",
            { class: "measure-pane", "aria-label": t("viewer.measurements") },
            h("h2", {}, t("viewer.measurements"), " ", h("button", { type: "button", id: "measurements-clear", on: { click: () => withActive((id) => viewer.clearMeasurements(id)) } }, t("viewer.clearMeasurements"))),
            measureList,
          ),
        ),
        h("aside", { class: "report-pane-slot", "data-testid": "report-pane-slot" }),
      ),
    ),
  );
  renderHead();
  renderClaim();
  replaceChildren(timelineSlot, timelineBlock(detail.timeline || []));
  disposers.push(mountReportPane(root.querySelector("[data-testid=report-pane-slot]"), { studyUid: uid, study: detail, user, signal, onChange: () => refreshDetail().then(() => renderClaim()) }));

  // ---- Series thumbnails (draggable into a viewport) with a progress bar each ----
  // Thumbnails are asked for once the first image is on screen or has failed (or THUMBS_AFTER_MS
  // after its load began): the hub renders each from its series' pixels, which for a large
  // radiograph costs as much as the first frame itself, and the two would share the hub and the link.
  const progressBars = new Map();
  let openThumbs = () => {};
  const thumbsGate = new Promise((resolve) => (openThumbs = resolve));
  const thumbsTimers = [setTimeout(() => openThumbs(), THUMBS_LATEST_MS)];
  disposers.push(() => thumbsTimers.forEach(clearTimeout));
  let thumbsClockStarted = false;
  function startThumbsClock() {
    if (thumbsClockStarted) return;
    thumbsClockStarted = true;
    thumbsTimers.push(setTimeout(() => openThumbs(), THUMBS_AFTER_MS));
  }
  async function loadThumbnail(series, img) {
    await thumbsGate;
    if (signal.aborted) return;
    try {
      const blob = await apiBlob(`${seriesBase(series.study, series.uid)}/thumbnail`, undefined, { signal, headers: THUMB_ACCEPT });
      const url = URL.createObjectURL(blob);
      thumbs.push(url);
      img.src = url;
    } catch (err) {
      if (err.name !== "AbortError") img.classList.add("thumb-missing");
    }
  }
  function seriesButton(series) {
    // A series of documents (the report's PDF, an SR, ...) has no pixels to draw: a label in
    // place of the thumbnail, and no request for one.
    const documents = DOCUMENT_MODALITIES.get(series.modality);
    const thumb = documents
      ? h("span", { class: ["thumb", "thumb-doc"], "aria-hidden": "true" }, documents)
      : h("img", { class: "thumb", alt: "", draggable: "false" });
    const bar = h("progress", { class: "series-progress", max: "1", value: "0", hidden: true });
    progressBars.set(series.uid, bar);
    const item = h(
      "button",
      {
        type: "button",
        class: "series-item",
        draggable: "true",
        dataset: { uid: series.uid },
        on: {
          click: () => withActive((id) => openSeries(id, series.uid)),
          dragstart: (event) => {
            event.dataTransfer.setData("application/x-imaging-hub-series", series.uid);
            event.dataTransfer.effectAllowed = "copy";
          },
        },
      },
      thumb,
      h(
        "span",
        { class: "series-text" },
        h("span", { class: "series-title" }, t("study.seriesItem", { number: series.number ?? "—", modality: series.modality, count: formatNumber(series.count) })),
        series.description ? h("span", { class: "series-desc" }, series.description) : null,
        bar,
      ),
    );
    if (!documents) loadThumbnail(series, thumb);
    return item;
  }
  for (const series of seriesList) seriesNav.appendChild(seriesButton(series));

  // ---- Prior studies of the same patient (listed now; opened side by side on demand) ----
  async function loadPriors() {
    if (!item.patient_id) {
      replaceChildren(priorsBox, h("p", { class: "muted" }, t("study.noPriors")));
      return;
    }
    let found;
    try {
      found = await apiGet("/dicomweb/studies", { PatientID: item.patient_id, includefield: "all", limit: 50 }, { signal, headers: DICOM_JSON });
    } catch (err) {
      if (err.name !== "AbortError") replaceChildren(priorsBox, messageBox("error", t("study.priorsFailed", { message: err.message })));
      return;
    }
    // Exactly this patient (a Patient ID holding "*" or "?" would match others in QIDO).
    const priors = (found || [])
      .filter((s) => first(s, TAG.StudyInstanceUID) && first(s, TAG.StudyInstanceUID) !== uid && first(s, TAG.PatientID) === item.patient_id)
      .sort((a, b) => String(first(b, TAG.StudyDate)).localeCompare(String(first(a, TAG.StudyDate))));
    for (const s of priors) priorStudies.set(first(s, TAG.StudyInstanceUID), { date: first(s, TAG.StudyDate) });
    replaceChildren(
      priorsBox,
      priors.length
        ? h(
            "ul",
            { class: "prior-list" },
            priors.map((s) => {
              const priorUid = first(s, TAG.StudyInstanceUID);
              const seriesBox = h("div", { class: "prior-series" });
              priorBoxes.set(priorUid, seriesBox);
              return h(
                "li",
                { class: "prior-study", "data-testid": "prior-study", dataset: { studyUid: priorUid } },
                h(
                  "div",
                  { class: "prior-text" },
                  h("span", { class: "prior-date" }, formatDicomDate(first(s, TAG.StudyDate))),
                  " ",
                  h("span", { class: "prior-mod" }, values(s, TAG.ModalitiesInStudy).join(", ")),
                  first(s, TAG.StudyDescription) ? h("span", { class: "prior-desc" }, first(s, TAG.StudyDescription)) : null,
                ),
                h("button", { type: "button", class: "prior-open", "data-testid": "prior-open", on: { click: () => comparePrior(priorUid) } }, t("study.compare")),
                seriesBox,
              );
            }),
          )
        : h("p", { class: "muted" }, t("study.noPriors")),
    );
  }
  // Awaited before a viewport from the URL shows a prior: only a listed prior (this patient,
  // within the caller's scope as the hub's QIDO-RS gives it) is ever opened.
  const priorsReady = loadPriors();

  /** The series of a listed prior, fetched once and listed under it; null for an unlisted study. */
  function priorSeriesList(priorUid) {
    const box = priorBoxes.get(priorUid);
    if (!box) return null;
    if (!priorLists.has(priorUid)) {
      const promise = studySeries(priorUid).then((list) => {
        for (const series of list) priorSeries.set(series.uid, series);
        if (!box.childElementCount) replaceChildren(box, list.map((series) => seriesButton(series)));
        if (!openedPriors.includes(priorUid)) openedPriors.push(priorUid);
        if (viewer) remember();
        return list;
      });
      promise.catch((err) => {
        priorLists.delete(priorUid);
        if (err.name !== "AbortError") replaceChildren(box, messageBox("error", t("study.priorSeriesFailed", { message: err.message })));
      });
      priorLists.set(priorUid, promise);
    }
    return priorLists.get(priorUid);
  }

  if (!seriesList.length) return cleanup;

  // ---- The viewer bundle ----
  replaceChildren(statusBox, h("span", { class: "loading" }, t("viewer.loadingBundle")));
  let lib;
  try {
    lib = await bundle;
  } catch (err) {
    openThumbs();
    replaceChildren(statusBox, messageBox("error", t("viewer.bundleFailed", { message: err.message || String(err) })));
    return cleanup;
  }
  if (signal.aborted) return cleanup;
  replaceChildren(statusBox);
  const drawing = lib.renderingMode();
  grid.dataset.renderer = drawing.mode;
  grid.dataset.webgl = drawing.renderer;
  viewer = new lib.HubViewer({ onChange: (id) => updateCell(id), onProgress: (key, done, total) => showProgress(key, done, total) });

  const metaCache = new Map(); // series uid -> Promise<images>
  const cells = []; // { id, cell, element, overlay, message, seriesUid }
  let active = 0;
  let layout = "1x1";
  let primaryTool = "wl";
  const windowChoice = new Map(); // viewport id -> preset key
  let cellCount = 0;

  function seriesImages(studyUid, seriesUid) {
    const key = `${studyUid}/${seriesUid}`;
    if (!metaCache.has(key)) {
      const base = seriesBase(studyUid, seriesUid);
      const promise = apiGet(`${base}/metadata`, undefined, { signal, headers: DICOM_JSON }).then((meta) => {
        const mine = (meta || []).filter((m) => first(m, TAG.StudyInstanceUID) === studyUid && first(m, TAG.SeriesInstanceUID) === seriesUid);
        return lib.registerSeries(base, mine);
      });
      promise.catch(() => metaCache.delete(key));
      metaCache.set(key, promise);
    }
    return metaCache.get(key);
  }

  // The first image of a series without waiting for the series' /metadata (for a 300-slice CT
  // the hub reads 300 headers before it answers): the series' first instance in display order
  // from QIDO-RS (the hub's index orders by Instance Number), then that instance's own
  // /metadata. null when QIDO gives no Instance Number (the order would be a guess).
  async function firstImages(studyUid, seriesUid) {
    const base = seriesBase(studyUid, seriesUid);
    const found = await apiGet(`${base}/instances`, { limit: 1 }, { signal, headers: DICOM_JSON });
    const inst = (found || [])[0];
    const sop = inst && first(inst, TAG.SOPInstanceUID);
    if (!sop || number(inst, TAG.InstanceNumber) === null) return null;
    const meta = await apiGet(`${base}/instances/${encodeURIComponent(sop)}/metadata`, undefined, { signal, headers: DICOM_JSON });
    const mine = (meta || []).filter((m) => first(m, TAG.StudyInstanceUID) === studyUid && first(m, TAG.SeriesInstanceUID) === seriesUid);
    return mine.length ? lib.registerSeries(base, mine) : null;
  }

  function showProgress(seriesUid, done, total) {
    const bar = progressBars.get(seriesUid);
    if (!bar) return;
    bar.max = Math.max(1, total);
    bar.value = done;
    bar.hidden = done >= total;
    bar.title = t("viewer.loaded", { done, total });
  }

  function makeCell() {
    cellCount += 1;
    const id = `vp-${cellCount}`;
    const element = h("div", { class: ["vp-element", "vp-blank"], dataset: { viewportId: id } });
    const overlay = {
      tl: h("div", { class: "vp-ov vp-tl" }),
      tr: h("div", { class: "vp-ov vp-tr" }),
      bl: h("div", { class: "vp-ov vp-bl" }),
      br: h("div", { class: "vp-ov vp-br" }),
    };
    const message = h("div", { class: "vp-message", "aria-live": "polite" });
    const cell = h("div", { class: "vp-cell", dataset: { viewportId: id } }, element, overlay.tl, overlay.tr, overlay.bl, overlay.br, message);
    // pending: the URL's entry for this viewport while it is being restored; notFound: that
    // entry named a series this caller cannot see (or that does not exist).
    const entry = { id, cell, element, overlay, message, seriesUid: null, studyUid: null, opening: 0, pending: null, notFound: false };
    cell.addEventListener("mousedown", () => activate(cells.indexOf(entry)), true);
    cell.addEventListener("dragover", (event) => {
      if (event.dataTransfer.types.includes("application/x-imaging-hub-series")) {
        event.preventDefault();
        cell.classList.add("drop-target");
      }
    });
    cell.addEventListener("dragleave", () => cell.classList.remove("drop-target"));
    cell.addEventListener("drop", (event) => {
      cell.classList.remove("drop-target");
      const seriesUid = event.dataTransfer.getData("application/x-imaging-hub-series");
      if (!seriesInfo(seriesUid)) return;
      event.preventDefault();
      activate(cells.indexOf(entry));
      openSeries(entry.id, seriesUid);
    });
    element.addEventListener("contextmenu", (event) => event.preventDefault());
    return entry;
  }

  function cellById(id) {
    return cells.find((c) => c.id === id);
  }

  function activeCell() {
    return cells[active] || cells[0];
  }

  function withActive(fn) {
    const c = activeCell();
    if (c && viewer) fn(c.id);
  }

  function activate(index) {
    if (index < 0 || index >= cells.length) return;
    active = index;
    cells.forEach((c, i) => {
      c.cell.classList.toggle("active", i === active);
      if (i === active) c.element.setAttribute("data-testid", "viewport");
      else c.element.removeAttribute("data-testid");
    });
    const c = activeCell();
    for (const b of root.querySelectorAll(".series-item")) {
      b.setAttribute("aria-current", c && b.dataset.uid === c.seriesUid ? "true" : "false");
    }
    updateCell(c.id);
  }

  function setLayout(key, { initial = false, fill = true } = {}) {
    if (!LAYOUTS[key]) key = "1x1";
    layout = key;
    const [rows, cols] = LAYOUTS[key];
    const count = rows * cols;
    while (cells.length < count) cells.push(makeCell());
    const removed = cells.splice(count);
    grid.className = `viewer-grid layout-${key}`;
    replaceChildren(grid, cells.map((c) => c.cell));
    for (const b of layoutButtons) b.setAttribute("aria-pressed", b.dataset.layout === key ? "true" : "false");
    viewer.setViewports(cells.map((c) => ({ id: c.id, element: c.element })));
    for (const c of removed) windowChoice.delete(c.id);
    if (active >= cells.length) active = 0;
    activate(active);
    if (!initial && fill) {
      // New viewports show the next series of the study that is not on screen yet.
      const shown = new Set(cells.map((c) => c.seriesUid).filter(Boolean));
      for (const c of cells) {
        if (c.seriesUid) continue;
        const next = seriesList.find((s) => !shown.has(s.uid));
        if (!next) break;
        shown.add(next.uid);
        openSeries(c.id, next.uid);
      }
      remember();
    }
  }

  /** Show a series in viewport id, at image (1-based instance) and frame; window [c, w]. */
  async function openSeries(id, seriesUid, start = {}) {
    const c = cellById(id);
    if (!c) return;
    const info = seriesInfo(seriesUid);
    if (!info) return;
    const opening = ++c.opening;
    c.pending = null;
    c.notFound = false;
    c.seriesUid = seriesUid;
    c.studyUid = info.study;
    windowChoice.set(id, start.window ? start.preset || "custom" : "default");
    if (cells[active] === c) activate(active);
    c.element.classList.add("vp-blank"); // at once: never the previous picture under this series
    replaceChildren(c.message, h("span", { class: "loading" }, t("viewer.loading")));
    // A series not loaded yet that opens at its first image: that image is shown from its own
    // metadata while the series' /metadata loads (in parallel), then the stack is extended.
    // (Not for a series of one instance: its /metadata is that instance's, one request instead of two.)
    const early = !metaCache.has(`${info.study}/${seriesUid}`) && info.count !== 1 && (start.image || 1) === 1 && (start.frame || 1) === 1;
    const whole = seriesImages(info.study, seriesUid);
    let wholeDone = false;
    whole.then(() => (wholeDone = true), () => {});
    let shownEarly = false;
    if (early) {
      const part = await firstImages(info.study, seriesUid).catch(() => null);
      if (part && !wholeDone && opening === c.opening && viewer) {
        startThumbsClock();
        await viewer.showSeries(id, info, part, 0, { voi: start.window || undefined });
        shownEarly = opening === c.opening;
      }
    }
    let images;
    try {
      images = await whole;
    } catch (err) {
      if (err.name === "AbortError" || opening !== c.opening) return;
      openThumbs(); // no image to wait for
      replaceChildren(c.message, messageBox("error", t("viewer.decodeFailed", { message: err.message })));
      return;
    }
    if (opening !== c.opening || !viewer) return;
    let index = 0;
    if (start.image) {
      const found = images.findIndex((im) => im.instance === start.image && im.frame === (start.frame || 1));
      const sameInstance = images.findIndex((im) => im.instance === start.image);
      index = found >= 0 ? found : Math.max(0, sameInstance);
    }
    if (shownEarly && viewer.extendSeries(id, images)) {
      const s = viewer.state(id);
      index = s && s.index >= 0 ? s.index : index;
    } else {
      startThumbsClock();
      await viewer.showSeries(id, info, images, index, { voi: start.window || undefined });
    }
    if (opening !== c.opening || !viewer) return;
    viewer.prefetch(seriesUid, images, index, PREFETCH_BYTES);
    relink();
    updateCell(id);
  }

  /** Link scrolling of the viewports that show cross-sectional series of one orientation. */
  function relink(align = "first") {
    if (!viewer) return;
    const c = activeCell();
    const ids = [c, ...cells.filter((x) => x !== c)].filter((x) => x && x.seriesUid).map((x) => x.id);
    if (syncOn) viewer.linkSlices(ids, { align });
    else viewer.unlinkSlices();
    for (const x of cells) updateCell(x.id);
  }

  function toggleSync() {
    syncOn = !syncOn;
    syncButton.setAttribute("aria-pressed", syncOn ? "true" : "false");
    // Switched on: what is shown now is taken as matching anatomy.
    relink("current");
  }

  /** Open a prior study beside the active viewport: its series listed, the best match shown. */
  async function comparePrior(priorUid) {
    let list;
    try {
      list = await priorSeriesList(priorUid);
    } catch {
      return; // said under the prior
    }
    if (!list || !viewer || signal.aborted || !list.length) return;
    const current = seriesInfo(activeCell().seriesUid);
    const sameModality = list.filter((x) => current && x.modality === current.modality);
    const pick = (sameModality.length ? sameModality : list).reduce((a, b) => (b.count > a.count ? b : a));
    if (layout === "1x1") setLayout("1x2", { fill: false });
    const from = active;
    const target = cells[(from + 1) % cells.length];
    if (target === cells[from]) return;
    await openSeries(target.id, pick.uid);
  }

  // Overlay text is updated in place (only lines whose text changed are touched): scrolling
  // through a series rewrites a few text nodes, not the overlay's elements.
  function overlayLines(el, lines) {
    const wanted = lines.filter(Boolean).map(String);
    while (el.childElementCount > wanted.length) el.lastElementChild.remove();
    wanted.forEach((line, i) => {
      const row = el.children[i] || el.appendChild(h("div", {}));
      if (row.textContent !== line) row.textContent = line;
    });
  }

  // Dates of the overlay formatted once per value and language (updateCell runs on every slice
  // of a scroll).
  const overlayDates = new Map();
  function overlayDate(value) {
    const key = `${getLanguage()}|${value}`;
    if (!overlayDates.has(key)) overlayDates.set(key, formatDicomDate(value));
    return overlayDates.get(key);
  }

  /** Bring a viewport's overlay, test hooks and (for the active one) the toolbar up to date. */
  function updateCell(id) {
    const c = cellById(id);
    if (!c || !viewer) return;
    const s = viewer.state(id);
    const image = s && s.image;
    if (!image) {
      c.element.removeAttribute("data-image-index");
      c.element.removeAttribute("data-frame");
      for (const el of Object.values(c.overlay)) replaceChildren(el);
      if (!c.seriesUid && c.notFound) replaceChildren(c.message, messageBox("error", t("viewer.seriesNotFound")));
      else if (!c.seriesUid && !c.pending) replaceChildren(c.message, h("span", { class: "vp-empty" }, t("viewer.empty")));
      else if (s && s.error) {
        openThumbs(); // no image to wait for
        replaceChildren(c.message, messageBox("error", t("viewer.decodeFailed", { message: s.error.message })));
      } else if (s && s.images === 0 && s.series && s.series.uid === c.seriesUid) {
        // Shown and nothing to show: the series' instances have no pixels (an Encapsulated PDF,
        // an SR) — said so, instead of "loading" for ever.
        openThumbs();
        replaceChildren(c.message, messageBox("info", t("viewer.noImages")));
      }
      if (cells[active] === c) updateToolbar(c, s);
      return;
    }
    const meta = image.meta;
    c.element.dataset.imageIndex = String(image.instance);
    c.element.dataset.frame = String(image.frame);
    c.element.dataset.sop = image.sop;
    c.element.dataset.series = c.seriesUid || "";
    if (s.voi) c.element.dataset.window = `${Math.round(s.voi[0])},${Math.round(s.voi[1])}`;
    c.element.dataset.invert = s.invert ? "true" : "false";
    // The overlay's patient comes from the image itself (never from the page), so a header and
    // a picture of different patients could not pass unnoticed.
    overlayLines(c.overlay.tl, [
      formatPersonName(personName(meta, TAG.PatientName)),
      first(meta, TAG.PatientID),
      formatSexAge(first(meta, TAG.PatientSex), first(meta, TAG.PatientBirthDate), first(meta, TAG.StudyDate)),
    ]);
    const expectedStudy = c.studyUid || uid;
    const prior = expectedStudy !== uid ? priorStudies.get(expectedStudy) : null;
    c.cell.classList.toggle("vp-prior", Boolean(prior));
    overlayLines(c.overlay.tr, [
      prior ? t("viewer.prior", { date: overlayDate(prior.date) || "—" }) : null,
      overlayDate(first(meta, TAG.StudyDate)),
      first(meta, TAG.StudyDescription),
      first(meta, TAG.AccessionNumber),
    ]);
    overlayLines(c.overlay.bl, [
      [t("viewer.overlaySeries", { number: first(meta, TAG.SeriesNumber) || "—" }), first(meta, TAG.Modality), first(meta, TAG.SeriesDescription)].filter(Boolean).join(" · "),
      t("viewer.overlayImage", { n: image.instance, total: image.instances }),
      image.frames > 1 ? t("viewer.overlayFrame", { n: image.frame, total: image.frames }) : null,
    ]);
    overlayLines(c.overlay.br, [
      s.voi ? t("viewer.overlayWindow", { center: Math.round(s.voi[0]), width: Math.round(s.voi[1]) }) : null,
      s.zoom ? t("viewer.overlayZoom", { zoom: Math.round(s.zoom * 100) }) : null,
    ]);
    // Wrong-patient guard: an image shows only in a viewport given its own study, which is this
    // page's study or a listed prior; a prior's image also needs this patient's ID.
    const wrongStudy = first(meta, TAG.StudyInstanceUID) !== expectedStudy || (expectedStudy !== uid && !prior);
    const wrongPatient = Boolean(prior) && first(meta, TAG.PatientID) !== item.patient_id;
    if (wrongStudy || wrongPatient) {
      openThumbs(); // no image to wait for
      c.element.classList.add("vp-blank");
      replaceChildren(c.message, messageBox("error", t(wrongStudy ? "viewer.wrongStudy" : "viewer.wrongPatient")));
    } else if (s.error) {
      openThumbs(); // no image to wait for
      replaceChildren(c.message, messageBox("error", t("viewer.decodeFailed", { message: s.error.message })));
    } else if (!s.shown) {
      replaceChildren(c.message, h("span", { class: "loading" }, t("viewer.loading")));
    } else {
      replaceChildren(c.message);
      openThumbs(); // an image is on screen
    }
    if (cells[active] === c) updateToolbar(c, s);
  }

  let lastPresetKey = "";
  let lastVoiText = "";
  function updateToolbar(c, s) {
    const image = s && s.image;
    position.textContent = image ? t("viewer.position", { n: image.instance, total: image.instances }) : "";
    framePosition.textContent = image && image.frames > 1 ? t("viewer.framePosition", { n: image.frame, total: image.frames }) : "";
    framePosition.hidden = !(image && image.frames > 1);
    prevButton.disabled = !image || image.instance <= 1;
    nextButton.disabled = !image || image.instance >= image.instances;
    slider.max = String(Math.max(1, (s && s.images) || 1));
    slider.value = String(image ? s.index + 1 : 1);
    slider.disabled = !(s && s.images > 1);
    // The inputs follow the window only when it changes (typing in them is never overwritten).
    const voiText = s && s.voi ? `${c.id}|${Math.round(s.voi[0] * 100) / 100}|${Math.round(s.voi[1] * 100) / 100}` : "";
    if (voiText && voiText !== lastVoiText) {
      lastVoiText = voiText;
      centerInput.value = String(Math.round(s.voi[0] * 100) / 100);
      widthInput.value = String(Math.round(s.voi[1] * 100) / 100);
    } else if (s && s.series && s.images === 0 && lastVoiText) {
      lastVoiText = ""; // a series without images has no window: not the last image's
      centerInput.value = widthInput.value = "";
    }
    const modality = image ? first(image.meta, TAG.Modality) : "";
    const own = s && s.defaultVoi;
    const choice = windowChoice.get(c.id) || "default";
    const key = `${c.id}|${modality}|${own ? own.join(",") : ""}|${choice}|${getLanguage()}`;
    if (key !== lastPresetKey) {
      lastPresetKey = key;
      replaceChildren(
        presetBar,
        presetsFor(modality, own).map(([name, win], i) =>
          h(
            "button",
            {
              type: "button",
              class: "preset",
              title: `${i}`,
              dataset: { preset: name },
              "aria-pressed": choice === name ? "true" : "false",
              on: { click: () => applyWindow(name, win) },
            },
            t(`viewer.preset.${name}`),
          ),
        ),
      );
    }
    cineButton.setAttribute("aria-pressed", s && s.cine ? "true" : "false");
    syncButton.classList.toggle("linked", Boolean(s && s.linked));
    cineButton.textContent = s && s.cine ? `■ ${t("viewer.stop")}` : `▶ ${t("viewer.cine")}`;
    renderMeasurements(c.id);
    remember();
  }

  let lastMeasureKey = null;
  function renderMeasurements(id) {
    const list = viewer.measurements(id);
    // Rebuilt only when the list changed (not on every slice of a scroll).
    const measureKey = JSON.stringify([id, getLanguage(), list]);
    if (measureKey === lastMeasureKey) return;
    lastMeasureKey = measureKey;
    const label = (m) => t(`viewer.m.${m.tool === lib.TOOLS.length ? "length" : m.tool === lib.TOOLS.angle ? "angle" : "ellipse"}`);
    const qualifier = (m) => (m.unit === "°" ? "" : m.kind === "detector" ? ` ${t("viewer.atDetector")}` : m.kind === "pixels" ? ` ${t("viewer.pixels")}` : "");
    replaceChildren(
      measureList,
      list.length
        ? list.map((m) =>
            h(
              "li",
              {
                class: "measurement",
                dataset: {
                  tool: m.tool,
                  value: String(m.value),
                  unit: m.unit || "",
                  calibration: m.kind,
                  points: m.points.filter(Boolean).map((p) => p.join(",")).join(";"),
                  ...(m.mean !== undefined && m.mean !== null ? { mean: String(m.mean), sd: String(m.stdDev), modalityUnit: m.modalityUnit || "" } : {}),
                },
              },
              h("span", { class: "m-label" }, label(m)),
              " ",
              h("span", { class: "m-value" }, formatMeasure(m.value)),
              " ",
              h("span", { class: "m-unit" }, m.unit || ""),
              qualifier(m),
              m.mean !== undefined && m.mean !== null
                ? h("span", { class: "m-stats" }, " · ", t("viewer.m.stats", { mean: formatMeasure(m.mean), sd: formatMeasure(m.stdDev), unit: m.modalityUnit || "" }))
                : null,
              " ",
              h("button", { type: "button", class: "m-delete", "aria-label": t("viewer.delete"), title: t("viewer.delete"), on: { click: () => viewer.removeMeasurement(m.uid) } }, "×"),
            ),
          )
        : h("li", { class: "empty" }, t("viewer.noMeasurements")),
    );
  }

  function applyWindow(name, win) {
    withActive((id) => {
      windowChoice.set(id, name);
      if (win) viewer.setWindow(id, win[0], win[1]);
      else viewer.resetWindow(id);
      lastPresetKey = "";
      updateCell(id);
    });
  }

  function selectTool(key) {
    primaryTool = key;
    viewer.setPrimaryTool(key);
    for (const b of toolButtons) b.setAttribute("aria-pressed", b.dataset.tool === key ? "true" : "false");
  }

  function resetView(id) {
    viewer.reset(id);
    windowChoice.set(id, "default");
    lastPresetKey = "";
    updateCell(id);
  }

  function stepInstance(id, delta) {
    const s = viewer.state(id);
    if (!s || !s.image) return;
    const targetInstance = s.image.instance + delta;
    const images = viewer.viewports.get(id).images;
    const target = images.findIndex((im) => im.instance === targetInstance);
    if (target >= 0) viewer.jumpTo(id, target);
  }

  function toggleCine() {
    withActive((id) => {
      const s = viewer.state(id);
      if (s && s.cine) viewer.stopCine(id);
      else viewer.playCine(id, clampFps());
    });
  }

  function clampFps() {
    const fps = Math.round(Number(fpsInput.value));
    const value = Number.isFinite(fps) ? Math.max(1, Math.min(60, fps)) : 15;
    fpsInput.value = String(value);
    return value;
  }

  fpsInput.addEventListener("change", () => {
    const fps = clampFps();
    withActive((id) => {
      const s = viewer.state(id);
      if (s && s.cine) viewer.playCine(id, fps);
    });
  });

  slider.addEventListener("input", () => withActive((id) => viewer.jumpTo(id, Number(slider.value) - 1)));

  /** A viewport's entry in the URL: "<series>" of this study, "<study>/<series>" of a prior, "-" empty. */
  function cellEntry(c) {
    if (!c.seriesUid) return c.pending || "-";
    return c.studyUid && c.studyUid !== uid ? `${c.studyUid}/${c.seriesUid}` : c.seriesUid;
  }

  /**
   * Keep the viewer's state in the URL: reload, bookmark, a shared link or a language switch
   * return to it. layout; vp = the series of each viewport in order (only when there is more
   * than one viewport or a prior is shown; else series = the one shown); active = the active
   * viewport (1-based); image, frame, window, preset = the active viewport's position and
   * window; prior = the priors whose series are listed.
   */
  let rememberTimer = 0;
  function remember() {
    clearTimeout(rememberTimer);
    rememberTimer = setTimeout(() => {
      if (!viewer || signal.aborted) return;
      const c = activeCell();
      const s = c && viewer.state(c.id);
      const image = s && s.image;
      const choice = (c && windowChoice.get(c.id)) || "default";
      const multi = cells.length > 1 || cells.some((x) => cellEntry(x).includes("/"));
      setQuery({
        series: !multi && c && c.seriesUid && seriesByUid.has(c.seriesUid) ? c.seriesUid : undefined,
        vp: multi ? cells.map(cellEntry) : undefined,
        active: multi && active > 0 ? active + 1 : undefined,
        image: image && image.instance > 1 ? image.instance : undefined,
        frame: image && image.frame > 1 ? image.frame : undefined,
        window: choice !== "default" && s && s.voi ? `${Math.round(s.voi[0])},${Math.round(s.voi[1])}` : undefined,
        preset: choice !== "default" ? choice : undefined,
        layout: layout !== "1x1" ? layout : undefined,
        prior: openedPriors.length ? openedPriors : undefined,
      });
    }, 150);
  }
  disposers.push(() => clearTimeout(rememberTimer));

  function onKey(event) {
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement || event.target instanceof HTMLTextAreaElement) return;
    if (event.target instanceof HTMLElement && event.target.isContentEditable) return;
    if (event.altKey || event.metaKey || (event.ctrlKey && event.key !== "Escape")) return;
    const c = activeCell();
    if (!c || !viewer) return;
    const id = c.id;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    const presets = () => presetsFor(first(viewer.state(id)?.image?.meta, TAG.Modality), viewer.state(id)?.defaultVoi);
    const actions = {
      ArrowUp: () => viewer.scroll(id, -1),
      ArrowDown: () => viewer.scroll(id, 1),
      ArrowLeft: () => stepInstance(id, -1),
      ArrowRight: () => stepInstance(id, 1),
      PageUp: () => viewer.scroll(id, -10),
      PageDown: () => viewer.scroll(id, 10),
      Home: () => viewer.jumpTo(id, 0),
      End: () => viewer.jumpTo(id, 1e9),
      w: () => selectTool("wl"),
      p: () => selectTool("pan"),
      z: () => selectTool("zoom"),
      l: () => selectTool("length"),
      a: () => selectTool("angle"),
      e: () => selectTool("ellipse"),
      i: () => viewer.setInvert(id),
      r: () => viewer.rotate(id, 90),
      h: () => viewer.flip(id, true),
      v: () => viewer.flip(id, false),
      f: () => viewer.fit(id),
      o: () => viewer.actualSize(id),
      "+": () => viewer.zoomBy(id, 1.25),
      "=": () => viewer.zoomBy(id, 1.25),
      "-": () => viewer.zoomBy(id, 0.8),
      c: () => toggleCine(),
      s: () => toggleSync(),
      "[": () => {
        fpsInput.value = String(clampFps() - 1);
        fpsInput.dispatchEvent(new Event("change"));
      },
      "]": () => {
        fpsInput.value = String(clampFps() + 1);
        fpsInput.dispatchEvent(new Event("change"));
      },
      "?": () => (helpBox.hidden = !helpBox.hidden),
      Escape: () => (helpBox.hidden ? resetView(id) : (helpBox.hidden = true)),
      Delete: () => {
        const list = viewer.measurements(id);
        if (list.length) viewer.removeMeasurement(list[list.length - 1].uid);
      },
    };
    for (let n = 0; n <= 5; n++) {
      actions[String(n)] = () => {
        const preset = presets()[n];
        if (preset) applyWindow(preset[0], preset[1]);
      };
    }
    const fn = actions[key];
    if (fn) {
      event.preventDefault();
      fn();
    }
  }
  document.addEventListener("keydown", onKey);
  disposers.push(() => document.removeEventListener("keydown", onKey));

  const resizer = new ResizeObserver(() => viewer && viewer.resize());
  resizer.observe(grid);
  disposers.push(() => resizer.disconnect());

  // ---- Start: layout, series, position and window from the URL ----
  setLayout(LAYOUTS[query.get("layout")] ? query.get("layout") : "1x1", { initial: true });
  const wanted = seriesByUid.get(query.get("series")) || seriesList[0];
  const win = (query.get("window") || "").split(",").map(Number);
  const start = {
    image: Number(query.get("image")) || 1,
    frame: Number(query.get("frame")) || 1,
    window: win.length === 2 && win.every(Number.isFinite) && win[1] > 0 ? win : null,
    preset: /^[a-z]{1,16}$/.test(query.get("preset") || "") ? query.get("preset") : null,
  };
  const UID = /^[0-9]+(\.[0-9]+)*$/;
  const validUid = (value) => typeof value === "string" && value.length <= 64 && UID.test(value);
  const entries = query.getAll("vp").slice(0, cells.length);
  if (entries.length) {
    // Each viewport as the URL has it; the position and window go to the active one.
    const wantedActive = Math.round(Number(query.get("active")) || 1) - 1;
    if (wantedActive > 0 && wantedActive < cells.length) activate(wantedActive);
    cells.forEach((c, i) => restoreCell(c, entries[i], i === active ? start : {}));
  } else {
    const others = seriesList.filter((s) => s !== wanted);
    cells.forEach((c, i) => {
      if (i === 0) openSeries(c.id, wanted.uid, start);
      else if (others[i - 1]) openSeries(c.id, others[i - 1].uid);
      else updateCell(c.id);
    });
  }
  // Priors whose series were listed (the ones shown in a viewport are listed by restoreCell).
  const priorParams = query.getAll("prior").filter(validUid).slice(0, 20);
  if (priorParams.length) {
    priorsReady.then(() => {
      for (const priorUid of priorParams) {
        const listing = priorSeriesList(priorUid);
        if (listing) listing.catch(() => {});
      }
    });
  }
  selectTool(primaryTool);

  /**
   * A viewport from its URL entry. A series of this study opens at once; a prior's only once the
   * priors are listed and only when it is one of them (this patient, within the caller's scope):
   * anything else says "not found" in that viewport and touches nothing else.
   */
  async function restoreCell(c, entry, at) {
    if (!entry || entry === "-") {
      updateCell(c.id);
      return;
    }
    const parts = entry.split("/");
    const [studyUid, seriesUid] = parts.length === 2 ? parts : [uid, parts[0]];
    const notFound = () => {
      if (c.pending !== entry) return; // the viewport was given something else meanwhile
      c.pending = null;
      c.notFound = true;
      updateCell(c.id);
      remember();
    };
    c.pending = entry;
    if (parts.length > 2 || !validUid(studyUid) || !validUid(seriesUid)) return notFound();
    if (studyUid === uid) {
      if (seriesByUid.has(seriesUid)) openSeries(c.id, seriesUid, at);
      else notFound();
      return;
    }
    replaceChildren(c.message, h("span", { class: "loading" }, t("viewer.loading")));
    await priorsReady;
    let list = null;
    try {
      list = await priorSeriesList(studyUid);
    } catch {
      list = null;
    }
    if (signal.aborted || c.pending !== entry) return;
    if (!list || !list.some((s) => s.uid === seriesUid)) return notFound();
    openSeries(c.id, seriesUid, at);
  }
  return cleanup;
}

registerRoute({
  path: "/study/:uid",
  title: "study.title",
  roles: ["radiologist", "consultant", "admin", "clinic_staff"],
  render: renderStudy,
});
