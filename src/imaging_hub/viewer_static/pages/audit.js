// Admin: the audit trail (#/admin/audit) from GET /api/v1/admin/audit — who did what, when, from
// where, to which study; filters by user, action, study and time range (kept in the hash
// query); CSV download of the filtered events from GET /api/v1/admin/audit.csv.

import { addStrings, formatDateTime, t } from "../i18n.js";
import { apiGet, buildQuery } from "../api.js";
import { knownInstitutionName, loadInstitutions } from "../institutions.js";
import { h, messageBox, replaceChildren } from "../dom.js";
import { registerRoute, setQuery } from "../router.js";

addStrings({
  "zh-CN": {
    "audit.title": "审计日志",
    "audit.heading": "审计日志",
    "audit.filters": "筛选审计事件",
    "audit.user": "用户",
    "audit.action": "操作",
    "audit.study": "检查 UID",
    "audit.since": "开始时间",
    "audit.until": "结束时间",
    "audit.any": "全部",
    "audit.apply": "查询",
    "audit.clear": "清除筛选",
    "audit.csv": "下载 CSV",
    "audit.empty": "没有符合条件的审计事件。",
    "audit.prev": "上一页",
    "audit.next": "下一页",
    "audit.page": "第 {n} 页",
    "audit.badStudy": "检查 UID 只能包含数字和点。",
    "audit.col.at": "时间",
    "audit.col.actor": "用户",
    "audit.col.action": "操作",
    "audit.col.object": "对象",
    "audit.col.study": "检查 UID",
    "audit.col.ip": "来源地址",
    "audit.col.detail": "详情",
    "audit.actor.gateway": "网关",
    "audit.actor.anonymous": "（未登录）",
    "audit.action.auth.login": "登录",
    "audit.action.auth.login_failed": "登录失败",
    "audit.action.auth.logout": "退出",
    "audit.action.auth.password_changed": "修改密码",
    "audit.action.study.opened": "打开检查",
    "audit.action.study.listed": "查看列表",
    "audit.action.study.frames_fetched": "调阅图像",
    "audit.action.study.retrieved": "下载检查",
    "audit.action.study.stored": "上传检查",
    "audit.action.study.claimed": "领取检查",
    "audit.action.study.escalated": "申请会诊",
    "audit.action.study.exported": "导出检查",
    "audit.action.report.downloaded": "下载报告",
    "audit.action.report.signed": "签发报告",
    "audit.action.audit.exported": "导出审计日志",
    "audit.action.admin.user": "用户管理",
    "audit.action.admin.gateway": "网关管理",
  },
  en: {
    "audit.title": "Audit log",
    "audit.heading": "Audit log",
    "audit.filters": "Filter audit events",
    "audit.user": "User",
    "audit.action": "Action",
    "audit.study": "Study UID",
    "audit.since": "From",
    "audit.until": "Until",
    "audit.any": "All",
    "audit.apply": "Search",
    "audit.clear": "Clear filters",
    "audit.csv": "Download CSV",
    "audit.empty": "No audit events match these filters.",
    "audit.prev": "Previous",
    "audit.next": "Next",
    "audit.page": "Page {n}",
    "audit.badStudy": "A study UID contains only digits and dots.",
    "audit.col.at": "Time",
    "audit.col.actor": "User",
    "audit.col.action": "Action",
    "audit.col.object": "Object",
    "audit.col.study": "Study UID",
    "audit.col.ip": "Address",
    "audit.col.detail": "Detail",
    "audit.actor.gateway": "gateway",
    "audit.actor.anonymous": "(not signed in)",
    "audit.action.auth.login": "Signed in",
    "audit.action.auth.login_failed": "Sign-in failed",
    "audit.action.auth.logout": "Signed out",
    "audit.action.auth.password_changed": "Password changed",
    "audit.action.study.opened": "Study opened",
    "audit.action.study.listed": "List viewed",
    "audit.action.study.frames_fetched": "Images viewed",
    "audit.action.study.retrieved": "Study retrieved",
    "audit.action.study.stored": "Study stored",
    "audit.action.study.claimed": "Study claimed",
    "audit.action.study.escalated": "Consultation requested",
    "audit.action.study.exported": "Study exported",
    "audit.action.report.downloaded": "Report downloaded",
    "audit.action.report.signed": "Report signed",
    "audit.action.audit.exported": "Audit log exported",
    "audit.action.admin.user": "User administration",
    "audit.action.admin.gateway": "Gateway administration",
  },
});

const ACTIONS = [
  "auth.login",
  "auth.login_failed",
  "auth.logout",
  "auth.password_changed",
  "study.opened",
  "study.listed",
  "study.frames_fetched",
  "study.retrieved",
  "study.stored",
  "study.claimed",
  "study.escalated",
  "study.exported",
  "report.downloaded",
  "report.signed",
  "audit.exported",
  "admin.user",
  "admin.gateway",
];
const LIMIT = 100;
const UID = /^[0-9]+(\.[0-9]+)*$/;

function actionLabel(action) {
  const key = `audit.action.${action}`;
  const text = t(key);
  return text === key ? action : text;
}

/** A <input type="datetime-local"> value (local time) as ISO 8601 UTC, or "" if empty. */
export function localToIso(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

/** ISO 8601 as a datetime-local value in the browser's time zone. */
export function isoToLocal(value) {
  if (!value) return "";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function field(id, label, control) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

function actorCell(e) {
  if (e.actor_kind === "gateway") return h("span", {}, e.actor, " ", h("span", { class: "chip" }, t("audit.actor.gateway")));
  if (e.actor_kind === "anonymous") return h("span", { class: "muted" }, t("audit.actor.anonymous"));
  return e.actor;
}

// Detail keys holding an institution code: shown as "name (code)" once the names are loaded.
const INSTITUTION_KEYS = new Set(["clinic", "institution", "to_institution", "from_institution"]);

function detailValue(key, value) {
  if (typeof value !== "string") return JSON.stringify(value);
  if (!INSTITUTION_KEYS.has(key)) return value;
  const name = knownInstitutionName(value);
  return name && name !== value ? `${name} (${value})` : value;
}

function detailText(detail) {
  const entries = Object.entries(detail || {});
  return entries.map(([k, v]) => `${k}: ${detailValue(k, v)}`).join("; ");
}

const COLUMNS = [
  ["at", "audit.col.at", (e) => h("time", { datetime: e.at }, formatDateTime(e.at))],
  ["actor", "audit.col.actor", actorCell],
  ["action", "audit.col.action", (e) => h("span", { title: e.action }, actionLabel(e.action))],
  ["object", "audit.col.object", (e) => [e.object_type, e.object_id].filter(Boolean).join(" ")],
  ["study", "audit.col.study", (e) => e.study_instance_uid],
  ["ip", "audit.col.ip", (e) => e.source_ip],
  ["detail", "audit.col.detail", (e) => detailText(e.detail)],
];

function renderAudit({ root, query, signal }) {
  const state = {
    user: query.get("user") || "",
    action: ACTIONS.includes(query.get("action")) ? query.get("action") : "",
    study: UID.test(query.get("study") || "") ? query.get("study") : "",
    since: query.get("since") || "",
    until: query.get("until") || "",
    offset: Math.max(0, Number.parseInt(query.get("offset") || "0", 10) || 0),
  };
  const notice = h("div", { "aria-live": "polite", id: "audit-notice" });
  const tableWrap = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  const csv = h("a", { class: "button", id: "audit-csv", download: "" }, t("audit.csv"));

  const userInput = h("input", { id: "audit-user", name: "user", value: state.user, maxlength: "64", autocomplete: "off", spellcheck: "false" });
  const actionSelect = h(
    "select",
    { id: "audit-action", name: "action" },
    h("option", { value: "", selected: state.action === "" }, t("audit.any")),
    ACTIONS.map((a) => h("option", { value: a, selected: a === state.action }, actionLabel(a))),
  );
  const studyInput = h("input", { id: "audit-study", name: "study", value: state.study, maxlength: "64", spellcheck: "false", autocomplete: "off" });
  const sinceInput = h("input", { id: "audit-since", name: "since", type: "datetime-local", value: isoToLocal(state.since) });
  const untilInput = h("input", { id: "audit-until", name: "until", type: "datetime-local", value: isoToLocal(state.until) });

  function params() {
    return { user: state.user, action: state.action, study: state.study, since: state.since, until: state.until };
  }

  function apply(patch) {
    Object.assign(state, patch);
    setQuery({ ...params(), offset: state.offset || undefined });
    load();
  }

  const form = h(
    "form",
    { class: "filters", id: "audit-filters", role: "search", "aria-label": t("audit.filters") },
    field("audit-user", t("audit.user"), userInput),
    field("audit-action", t("audit.action"), actionSelect),
    h("div", { class: "field field-wide" }, h("label", { for: "audit-study" }, t("audit.study")), studyInput),
    field("audit-since", t("audit.since"), sinceInput),
    field("audit-until", t("audit.until"), untilInput),
    h(
      "div",
      { class: "field field-buttons" },
      h("button", { type: "submit", id: "audit-apply", class: "primary" }, t("audit.apply")),
      h("button", {
        type: "button",
        id: "audit-clear",
        on: {
          click: () => {
            for (const el of [userInput, studyInput, sinceInput, untilInput]) el.value = "";
            actionSelect.value = "";
            apply({ user: "", action: "", study: "", since: "", until: "", offset: 0 });
          },
        },
      }, t("audit.clear")),
      csv,
    ),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const study = studyInput.value.trim();
    if (study && !UID.test(study)) {
      replaceChildren(notice, messageBox("error", t("audit.badStudy")));
      return;
    }
    apply({
      user: userInput.value.trim(),
      action: actionSelect.value,
      study,
      since: localToIso(sinceInput.value),
      until: localToIso(untilInput.value),
      offset: 0,
    });
  });

  function renderTable(items) {
    const head = h("thead", {}, h("tr", {}, COLUMNS.map(([key, label]) => h("th", { scope: "col", class: `col-${key}` }, t(label)))));
    const body = h(
      "tbody",
      {},
      items.map((e) => h("tr", { dataset: { id: String(e.id) } }, COLUMNS.map(([key, , cell]) => h("td", { class: `col-${key}` }, cell(e))))),
    );
    replaceChildren(tableWrap, h("table", { class: "data-table", id: "audit-table" }, head, body));
    if (items.length === 0) tableWrap.appendChild(h("p", { class: "empty", id: "audit-empty" }, t("audit.empty")));
    replaceChildren(
      pager,
      h("button", { type: "button", id: "audit-prev", disabled: state.offset === 0, on: { click: () => apply({ offset: Math.max(0, state.offset - LIMIT) }) } }, t("audit.prev")),
      h("span", { class: "page-no" }, t("audit.page", { n: Math.floor(state.offset / LIMIT) + 1 })),
      h("button", { type: "button", id: "audit-next", disabled: items.length < LIMIT, on: { click: () => apply({ offset: state.offset + LIMIT }) } }, t("audit.next")),
    );
  }

  async function load() {
    csv.setAttribute("href", `/api/v1/admin/audit.csv${buildQuery(params())}`);
    try {
      const [data] = await Promise.all([
        apiGet("/api/v1/admin/audit", { ...params(), limit: LIMIT, offset: state.offset }, { signal }),
        loadInstitutions().catch(() => null),
      ]);
      replaceChildren(notice);
      renderTable(data.items);
    } catch (err) {
      if (err.name !== "AbortError") replaceChildren(notice, messageBox("error", err.message));
    }
  }

  root.appendChild(
    h("section", { class: "audit-page" }, h("div", { class: "page-head" }, h("h1", {}, t("audit.heading"))), form, notice, tableWrap, pager),
  );
  return load();
}

registerRoute({
  path: "/admin/audit",
  title: "audit.title",
  roles: ["admin"],
  nav: true,
  order: 60,
  render: renderAudit,
});
