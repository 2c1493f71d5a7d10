// Admin: clinic gateways (#/admin/gateways) from GET /api/v1/admin/gateways — backlog per clinic,
// each gateway's last heartbeat, an alarm when a gateway has been silent too long, and the studies
// the gateways parked (the hub refused them for good) with their reason, translated by code.

import { addStrings, formatDateTime, getLanguage, t } from "../i18n.js";
import { apiGet } from "../api.js";
import { knownCode } from "../errors.js";
import { h, messageBox, replaceChildren } from "../dom.js";
import { formatNumber } from "../format.js";
import { registerRoute } from "../router.js";

addStrings({
  "zh-CN": {
    "gateways.title": "网关",
    "gateways.heading": "卫生院网关",
    "gateways.alarm": "有网关超过 {minutes} 分钟没有报告，请联系相关卫生院。",
    "gateways.allOk": "所有网关都在按时报告。",
    "gateways.backlog": "各卫生院待传数据",
    "gateways.list": "网关",
    "gateways.none": "还没有网关。",
    "gateways.col.clinic": "卫生院",
    "gateways.col.gateways": "网关数",
    "gateways.col.silent": "失联",
    "gateways.col.queue": "待传图像",
    "gateways.col.bytes": "待传数据量",
    "gateways.col.failed": "传输失败",
    "gateways.col.name": "名称",
    "gateways.col.ae": "AE 名称",
    "gateways.col.state": "状态",
    "gateways.col.lastSeen": "最近报告",
    "gateways.col.version": "版本",
    "gateways.col.uplink": "上行速率",
    "gateways.col.lastSuccess": "最近成功上传",
    "gateways.col.lastError": "最近错误",
    "gateways.state.ok": "正常",
    "gateways.state.silent": "失联",
    "gateways.state.revoked": "已停用",
    "gateways.never": "从未报告",
    "gateways.ago": "{n} 分钟前",
    "gateways.col.parked": "已暂停检查",
    "gateways.parked": "已暂停转发的检查",
    "gateways.parked.hint": "中心拒收的检查不会反复重试：按计划重试（最长间隔 30 分钟），或在卫生院网关上运行 imaging-hub gateway retry 立即重试。",
    "gateways.col.gateway": "网关",
    "gateways.col.study": "检查 UID",
    "gateways.col.reason": "原因",
    "gateways.col.instances": "图像数",
    "gateways.col.parkedAt": "暂停时间",
    "gateways.col.nextTry": "下次重试",
  },
  en: {
    "gateways.title": "Gateways",
    "gateways.heading": "Clinic gateways",
    "gateways.alarm": "A gateway has not reported for more than {minutes} minutes. Contact the clinic.",
    "gateways.allOk": "Every gateway is reporting on time.",
    "gateways.backlog": "Backlog per clinic",
    "gateways.list": "Gateways",
    "gateways.none": "No gateways yet.",
    "gateways.col.clinic": "Clinic",
    "gateways.col.gateways": "Gateways",
    "gateways.col.silent": "Silent",
    "gateways.col.queue": "Images queued",
    "gateways.col.bytes": "Data queued",
    "gateways.col.failed": "Failed",
    "gateways.col.name": "Name",
    "gateways.col.ae": "AE title",
    "gateways.col.state": "State",
    "gateways.col.lastSeen": "Last report",
    "gateways.col.version": "Version",
    "gateways.col.uplink": "Uplink",
    "gateways.col.lastSuccess": "Last upload",
    "gateways.col.lastError": "Last error",
    "gateways.state.ok": "OK",
    "gateways.state.silent": "Silent",
    "gateways.state.revoked": "Revoked",
    "gateways.never": "Never",
    "gateways.ago": "{n} min ago",
    "gateways.col.parked": "Parked studies",
    "gateways.parked": "Parked studies",
    "gateways.parked.hint": "What the hub refused for good is not retried in a loop: it is tried again on a schedule (at most every 30 min), or at once with imaging-hub gateway retry at the clinic's gateway.",
    "gateways.col.gateway": "Gateway",
    "gateways.col.study": "Study UID",
    "gateways.col.reason": "Reason",
    "gateways.col.instances": "Images",
    "gateways.col.parkedAt": "Parked at",
    "gateways.col.nextTry": "Next try",
  },
});

const REFRESH_MS = 15000;

/** Bytes as B / KB / MB / GB (binary units, one decimal). */
export function formatBytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

function fromUnix(seconds) {
  return typeof seconds === "number" && seconds > 0 ? new Date(seconds * 1000) : null;
}

function table(id, columns, rows) {
  return h(
    "table",
    { class: "data-table", id },
    h("thead", {}, h("tr", {}, columns.map(([key, label]) => h("th", { scope: "col", class: `col-${key}` }, t(label))))),
    h(
      "tbody",
      {},
      rows.map((row) => h("tr", { class: row.className || null }, columns.map(([key, , cell]) => h("td", { class: `col-${key}` }, cell(row))))),
    ),
  );
}

function stateChip(gw) {
  const state = gw.revoked ? "revoked" : gw.silent ? "silent" : "ok";
  return h("span", { class: ["chip", `gw-${state}`] }, t(`gateways.state.${state}`));
}

function lastSeen(gw) {
  if (!gw.last_seen_at) return t("gateways.never");
  const minutes = gw.seconds_since_seen === null ? null : Math.floor(gw.seconds_since_seen / 60);
  return h(
    "span",
    { title: minutes === null ? null : t("gateways.ago", { n: minutes }) },
    formatDateTime(gw.last_seen_at),
  );
}

/** Why a study was parked: the hub's code in the user's language; the hub's English detail
 *  only in the English interface (and as a tooltip with the code). */
export function parkedReason(item) {
  const code = String(item.code || "");
  const detail = String(item.reason || "");
  const english = getLanguage() === "en";
  const text = knownCode(code) ? t(`error.code.${code}`) : english ? detail : code;
  const shown = english && knownCode(code) && detail ? `${text} (${detail})` : text;
  return h("span", { class: "error-text", title: code || null, "data-code": code }, shown);
}

function parkedRows(gateways) {
  const rows = [];
  for (const g of gateways) {
    for (const p of Array.isArray(g.status.parked) ? g.status.parked : []) rows.push({ ...p, gateway: g });
  }
  return rows;
}

function render(container, data) {
  const status = data.alarm
    ? messageBox("error", t("gateways.alarm", { minutes: Math.round(data.silence_alarm_seconds / 60) }))
    : messageBox("ok", t("gateways.allOk"));
  status.id = "gateways-alarm";
  const backlog = table(
    "gateways-backlog",
    [
      ["clinic", "gateways.col.clinic", (c) => h("span", { title: c.clinic }, c.clinic_name || c.clinic)],
      ["gateways", "gateways.col.gateways", (c) => formatNumber(c.gateways)],
      ["silent", "gateways.col.silent", (c) => (c.silent_gateways ? h("span", { class: "overdue" }, formatNumber(c.silent_gateways)) : "0")],
      ["queue", "gateways.col.queue", (c) => formatNumber(c.queue_depth)],
      ["bytes", "gateways.col.bytes", (c) => formatBytes(c.bytes_pending)],
      ["failed", "gateways.col.failed", (c) => formatNumber(c.failed)],
      ["parked", "gateways.col.parked", (c) => formatNumber(c.parked_studies || 0)],
    ],
    data.clinics,
  );
  const gateways = table(
    "gateways-list",
    [
      ["name", "gateways.col.name", (g) => g.name],
      ["clinic", "gateways.col.clinic", (g) => h("span", { title: g.clinic }, g.clinic_name || g.clinic)],
      ["ae", "gateways.col.ae", (g) => g.ae_title],
      ["state", "gateways.col.state", stateChip],
      ["lastSeen", "gateways.col.lastSeen", lastSeen],
      ["version", "gateways.col.version", (g) => String(g.status.version || "")],
      ["queue", "gateways.col.queue", (g) => (g.status.queue_depth === undefined ? "" : formatNumber(g.status.queue_depth))],
      ["bytes", "gateways.col.bytes", (g) => formatBytes(g.status.bytes_pending)],
      ["failed", "gateways.col.failed", (g) => (g.status.failed === undefined ? "" : formatNumber(g.status.failed))],
      ["parked", "gateways.col.parked", (g) => (g.status.parked_studies === undefined ? "" : formatNumber(g.status.parked_studies))],
      ["uplink", "gateways.col.uplink", (g) => (g.status.uplink_bytes_per_second ? `${formatBytes(g.status.uplink_bytes_per_second)}/s` : "")],
      ["lastSuccess", "gateways.col.lastSuccess", (g) => formatDateTime(fromUnix(g.status.last_success_at))],
      ["lastError", "gateways.col.lastError", (g) =>
        g.status.last_error
          ? h("span", { class: "error-text", title: formatDateTime(fromUnix(g.status.last_error_at)) }, String(g.status.last_error))
          : ""],
    ],
    data.gateways.map((g) => ({ ...g, className: g.silent && !g.revoked ? "row-silent" : null })),
  );
  const parked = parkedRows(data.gateways);
  const parkedTable = table(
    "gateways-parked",
    [
      ["gateway", "gateways.col.gateway", (p) => h("span", { title: p.gateway.clinic }, p.gateway.name)],
      ["study", "gateways.col.study", (p) => h("code", {}, String(p.study_instance_uid || ""))],
      ["reason", "gateways.col.reason", parkedReason],
      ["instances", "gateways.col.instances", (p) => formatNumber(p.instances || 0)],
      ["parkedAt", "gateways.col.parkedAt", (p) => formatDateTime(fromUnix(p.parked_at))],
      ["nextTry", "gateways.col.nextTry", (p) => formatDateTime(fromUnix(p.next_try_at))],
    ],
    parked.map((p) => ({ ...p, className: "row-parked" })),
  );
  const parkedSection = parked.length
    ? [h("h2", {}, t("gateways.parked")), h("p", { class: "hint" }, t("gateways.parked.hint")), h("div", { class: "table-wrap" }, parkedTable)]
    : [];
  replaceChildren(
    container,
    status,
    h("h2", {}, t("gateways.backlog")),
    h("div", { class: "table-wrap" }, backlog),
    h("h2", {}, t("gateways.list")),
    data.gateways.length ? h("div", { class: "table-wrap" }, gateways) : h("p", { class: "empty" }, t("gateways.none")),
    ...parkedSection,
  );
}

registerRoute({
  path: "/admin/gateways",
  title: "gateways.title",
  roles: ["admin"],
  nav: true,
  order: 50,
  async render({ root, signal }) {
    const updated = h("span", { class: "updated", id: "gateways-updated" });
    const body = h("div", { class: "gateways-body" });
    const errors = h("div", { "aria-live": "polite" });
    root.appendChild(h("section", { class: "gateways-page" }, h("div", { class: "page-head" }, h("h1", {}, t("gateways.heading")), updated), errors, body));
    async function load() {
      try {
        const data = await apiGet("/api/v1/admin/gateways", undefined, { signal });
        replaceChildren(errors);
        render(body, data);
        updated.textContent = formatDateTime(new Date());
      } catch (err) {
        if (err.name !== "AbortError") replaceChildren(errors, messageBox("error", err.message));
      }
    }
    await load();
    const timer = setInterval(() => {
      if (document.visibilityState === "visible") load();
    }, REFRESH_MS);
    return () => clearInterval(timer);
  },
});
