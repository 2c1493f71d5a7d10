// i18n: every user-visible string goes through t(key). zh-CN is the default language.
//
// Other modules add their own strings with addStrings({ "zh-CN": {...}, en: {...} }) at import
// time, so a page's strings live next to the page. Keys are dotted: "worklist.title".
// Static markup uses data-i18n="key" (textContent), data-i18n-title / -placeholder / -aria-label
// for attributes; applyI18n(root) fills them and is run again after every language switch.

export const LANGUAGES = ["zh-CN", "en"];
export const DEFAULT_LANGUAGE = "zh-CN";
const STORAGE_KEY = "imaging-hub.lang";

const catalogs = { "zh-CN": Object.create(null), en: Object.create(null) };
const listeners = new Set();
let current = readStoredLanguage();

function readStoredLanguage() {
  try {
    const stored = window.localStorage.getItem(STORAGE_KEY);
    if (stored && LANGUAGES.includes(stored)) return stored;
  } catch {
    // localStorage can be disabled by policy; fall back to the default.
  }
  return DEFAULT_LANGUAGE;
}

/** Merge strings into the catalogs: addStrings({ "zh-CN": { key: "…" }, en: { key: "…" } }). */
export function addStrings(strings) {
  for (const lang of Object.keys(strings)) {
    if (!catalogs[lang]) throw new Error(`Unknown language ${lang}`);
    Object.assign(catalogs[lang], strings[lang]);
  }
}

export function getLanguage() {
  return current;
}

export function setLanguage(lang) {
  if (!LANGUAGES.includes(lang)) throw new Error(`Unknown language ${lang}`);
  current = lang;
  try {
    window.localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    // Not persisted; the choice still holds for this page.
  }
  document.documentElement.lang = lang;
  applyI18n(document);
  for (const fn of listeners) fn(lang);
}

/** Call fn(lang) after every language switch; returns a function that unsubscribes. */
export function onLanguageChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/**
 * The string for key in the current language, with {name} placeholders filled from params.
 * Falls back to English, then to the key itself (so a missing string is visible, not blank).
 */
export function t(key, params) {
  let text = catalogs[current][key];
  if (text === undefined) text = catalogs.en[key];
  if (text === undefined) text = key;
  if (params) {
    text = text.replace(/\{(\w+)\}/g, (whole, name) =>
      Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : whole,
    );
  }
  return text;
}

/** True when key has a string in some language (used to translate API enums with a fallback). */
export function hasString(key) {
  return key in catalogs[current] || key in catalogs.en;
}

const ATTRIBUTES = ["title", "placeholder", "aria-label"];

/** Fill data-i18n (textContent) and data-i18n-title/-placeholder/-aria-label under root. */
export function applyI18n(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const attr of ATTRIBUTES) {
    for (const el of root.querySelectorAll(`[data-i18n-${attr}]`)) {
      el.setAttribute(attr, t(el.getAttribute(`data-i18n-${attr}`)));
    }
  }
}

function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  if (value instanceof Date) return value;
  let text = String(value);
  // The API sends ISO 8601 with an offset; a bare timestamp is UTC by the hub's convention.
  if (/^\d{4}-\d\d-\d\dT[\d:.]+$/.test(text)) text += "Z";
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** A timestamp in the browser's local time zone, e.g. 2026/11/22 21:07. */
export function formatDateTime(value) {
  const date = toDate(value);
  if (!date) return "";
  return new Intl.DateTimeFormat(current, {
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    hourCycle: "h23",
  }).format(date);
}

/** A DICOM DA value (YYYYMMDD) as a local date string; other input is returned unchanged. */
export function formatDicomDate(da) {
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(da || "");
  if (!m) return da || "";
  const date = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  return new Intl.DateTimeFormat(current, {
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
  }).format(date);
}

/** Minutes from now to value, negative when past; null when value is empty. */
export function minutesUntil(value, now = new Date()) {
  const date = toDate(value);
  if (!date) return null;
  return Math.round((date.getTime() - now.getTime()) / 60000);
}

export { toDate };

addStrings({
  "zh-CN": {
    "app.title": "影像中心",
    "app.subtitle": "远程影像诊断",
    "app.loading": "正在加载…",
    "app.noscript": "请启用 JavaScript。",
    "lang.switch": "English",
    "lang.label": "语言",
    "nav.logout": "退出登录",
    "nav.main": "主导航",
    "role.admin": "管理员",
    "role.radiologist": "影像科医生",
    "role.consultant": "会诊专家",
    "role.clinic_staff": "卫生院工作人员",
    "error.network": "无法连接服务器，请检查网络后重试。",
    "error.generic": "出错了（{status}）。",
    "error.forbidden": "您没有执行此操作的权限。",
    "error.notFound": "未找到请求的内容。",
    "error.session": "登录已过期，请重新登录。",
    "error.server": "服务器暂时无法处理请求，请稍后重试。",
    "error.validation": "输入有误：{detail}",
    "error.pageNotFound": "页面不存在。",
    "common.retry": "重试",
    "common.prev": "上一页",
    "common.next": "下一页",
    "common.page": "第 {n} 页",
    "common.close": "关闭",
    "common.yes": "是",
    "common.no": "否",
  },
  en: {
    "app.title": "Imaging Hub",
    "app.subtitle": "Teleradiology",
    "app.loading": "Loading…",
    "app.noscript": "Please enable JavaScript.",
    "lang.switch": "中文",
    "lang.label": "Language",
    "nav.logout": "Log out",
    "nav.main": "Main navigation",
    "role.admin": "Administrator",
    "role.radiologist": "Radiologist",
    "role.consultant": "Consultant",
    "role.clinic_staff": "Clinic staff",
    "error.network": "Cannot reach the server. Check the network and try again.",
    "error.generic": "Something went wrong ({status}).",
    "error.forbidden": "You are not allowed to do this.",
    "error.notFound": "The requested item was not found.",
    "error.session": "Your session has expired. Please log in again.",
    "error.server": "The server cannot handle the request right now. Please try again later.",
    "error.validation": "Invalid input: {detail}",
    "error.pageNotFound": "This page does not exist.",
    "common.retry": "Retry",
    "common.prev": "Previous",
    "common.next": "Next",
    "common.page": "Page {n}",
    "common.close": "Close",
    "common.yes": "Yes",
    "common.no": "No",
  },
});
