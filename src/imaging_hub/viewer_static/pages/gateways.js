// Admin: clinic gateways (#/admin/gateways) from GET /api/v1/admin/gateways — backlog per clinic,
// each gateway's last heartbeat, an alarm when a gateway has been silent too long, and the studies
// the gateways parked (the hub refused them for good) with their reason, translated by code.

import { addStrings, formatDateTime, getLanguage, t } from "../i18n.js";
import { apiGet, apiPost } from "../api.js";
import { knownCode } from "../errors.js";
import { h, messageBox, replaceChildren } from "../dom.js";
import { loadInstitutions } from "../institutions.js";
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
    "gateways.state.spoolFull": "磁盘已满，拒收影像",
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
    "gateways.col.actions": "操作",
    "gateways.new": "新建网关",
    "gateways.create": "创建网关并生成令牌",
    "gateways.cancel": "取消",
    "gateways.form.name": "网关名称",
    "gateways.form.nameHint": "字母、数字、点、横线或下划线，例如 gateway-clinic-c。",
    "gateways.form.clinic": "卫生院",
    "gateways.form.ae": "AE 名称（可选）",
    "gateways.rotate": "更换令牌",
    "gateways.revoke": "停用",
    "gateways.revokeConfirm": "确认停用 {name}？该网关的所有令牌将立即失效，此操作不能撤销。",
    "gateways.revokeYes": "确认停用",
    "gateways.revoked": "已停用网关 {name}。",
    "gateways.token.created": "网关 {name}（{clinic}）已创建。",
    "gateways.token.rotated": "网关 {name}（{clinic}）的新令牌：",
    "gateways.token.once": "令牌只显示这一次，中心只保存其散列值。请立即复制并写入卫生院网关的配置（gateway.toml）。",
    "gateways.token.grace": "旧令牌在 72 小时内（或下一次更换前）仍然有效，以便网关不停机切换；如旧令牌可能已泄露，请再更换一次或停用该网关。",
    "gateways.token.copy": "复制令牌",
    "gateways.token.copied": "已复制。",
    "gateways.token.copyFailed": "无法自动复制，请手动选中令牌复制。",
    "gateways.token.done": "我已保存令牌",
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
    "gateways.state.spoolFull": "Disk full: refusing images",
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
    "gateways.col.actions": "Actions",
    "gateways.new": "New gateway",
    "gateways.create": "Create gateway and issue its token",
    "gateways.cancel": "Cancel",
    "gateways.form.name": "Gateway name",
    "gateways.form.nameHint": "Letters, digits, dot, dash or underscore, e.g. gateway-clinic-c.",
    "gateways.form.clinic": "Clinic",
    "gateways.form.ae": "AE title (optional)",
    "gateways.rotate": "Rotate token",
    "gateways.revoke": "Revoke",
    "gateways.revokeConfirm": "Revoke {name}? Every token of this gateway is refused at once; this cannot be undone.",
    "gateways.revokeYes": "Revoke now",
    "gateways.revoked": "Gateway {name} revoked.",
    "gateways.token.created": "Gateway {name} ({clinic}) created.",
    "gateways.token.rotated": "New token of gateway {name} ({clinic}):",
    "gateways.token.once": "This token is shown only once; the hub keeps only its hash. Copy it now into the clinic gateway's configuration (gateway.toml).",
    "gateways.token.grace": "The previous token keeps working for 72 hours (or until the next rotation), so the gateway switches without downtime; if it may have leaked, rotate once more or revoke the gateway.",
    "gateways.token.copy": "Copy token",
    "gateways.token.copied": "Copied.",
    "gateways.token.copyFailed": "Cannot copy automatically: select the token and copy it by hand.",
    "gateways.token.done": "I have saved the token",
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
      rows.map((row) => h("tr", { class: row.className || null, ...(row.rowAttrs || {}) }, columns.map(([key, , cell]) => h("td", { class: `col-${key}` }, cell(row))))),
    ),
  );
}

function stateChip(gw) {
  const state = gw.revoked ? "revoked" : gw.silent ? "silent" : gw.status.spool_full ? "spoolFull" : "ok";
  const look = state === "spoolFull" ? "silent" : state; // an alarm, styled as a silent gateway
  return h("span", { class: ["chip", `gw-${look}`], "data-state": state }, t(`gateways.state.${state}`));
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

function render(container, data, actions) {
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
      ["actions", "gateways.col.actions", actions],
    ],
    data.gateways.map((g) => ({
      ...g,
      className: g.silent && !g.revoked ? "row-silent" : null,
      rowAttrs: { "data-testid": "admin-gateway-row", "data-name": g.name },
    })),
  );
  const parked = parkedRows(data.gateways);
  const parkedTable = table(
    "gateways-parked",
    [
      ["gateway", "gateways.col.gateway", (p) => h("span", { title: p.gateway.clinic_name || p.gateway.clinic }, p.gateway.name)],
      ["clinic", "gateways.col.clinic", (p) => h("span", { title: p.gateway.clinic }, p.gateway.clinic_name || p.gateway.clinic)],
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

/** The panel showing a new token once: copy button, the once-only warning, the rotation note. */
function tokenPanel(issued, clinicName, rotated, onDone) {
  const code = h("code", { class: "token-value", id: "admin-token", "data-testid": "admin-token" }, issued.token);
  const copied = h("span", { class: "token-copied", "aria-live": "polite" });
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(issued.token);
      copied.textContent = t("gateways.token.copied");
    } catch {
      const range = document.createRange();
      range.selectNodeContents(code);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      copied.textContent = t("gateways.token.copyFailed");
    }
  };
  const vars = { name: issued.name, clinic: clinicName };
  return h(
    "section",
    { class: "token-panel", id: "admin-token-panel", role: "alert" },
    h("p", { class: "token-title" }, t(rotated ? "gateways.token.rotated" : "gateways.token.created", vars)),
    h("div", { class: "token-row" },
      code,
      h("button", { type: "button", "data-testid": "admin-token-copy", on: { click: copy } }, t("gateways.token.copy")),
      copied),
    h("p", { class: "token-warning", "data-testid": "admin-token-warning" }, t("gateways.token.once")),
    rotated ? h("p", { class: "hint" }, t("gateways.token.grace")) : null,
    h("button", { type: "button", class: "primary", "data-testid": "admin-token-close", on: { click: onDone } }, t("gateways.token.done")),
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
    const notice = h("div", { id: "admin-gateways-notice", "data-testid": "admin-gateways-notice", "aria-live": "polite" });
    const tokenSlot = h("div", { class: "token-slot" });
    const formSlot = h("div", { class: "admin-form-slot" });
    let institutions = new Map();
    const clinicName = (code) => (institutions.get(code) || {}).name || code;
    const fail = (err) => {
      if (err && err.name === "AbortError") return;
      const box = messageBox("error", err.message);
      if (err.code) box.dataset.code = err.code;
      replaceChildren(notice, box);
    };
    const showToken = (issued, rotated) => {
      replaceChildren(notice);
      replaceChildren(tokenSlot, tokenPanel(issued, clinicName(issued.clinic), rotated, () => replaceChildren(tokenSlot)));
    };

    async function rotate(g) {
      try {
        showToken(await apiPost(`/api/v1/admin/gateways/${encodeURIComponent(g.name)}/rotate`, undefined, { signal }), true);
      } catch (err) {
        fail(err);
      }
      load();
    }

    function askRevoke(g, cell) {
      const yes = h("button", {
        type: "button",
        class: "danger",
        "data-testid": "admin-gateway-revoke-confirm",
        on: {
          click: async () => {
            try {
              await apiPost(`/api/v1/admin/gateways/${encodeURIComponent(g.name)}/revoke`, undefined, { signal });
              replaceChildren(notice, messageBox("ok", t("gateways.revoked", { name: g.name })));
            } catch (err) {
              fail(err);
            }
            load();
          },
        },
      }, t("gateways.revokeYes"));
      const no = h("button", { type: "button", "data-testid": "admin-gateway-revoke-cancel", on: { click: () => load() } }, t("gateways.cancel"));
      replaceChildren(cell, h("span", { class: "confirm", role: "alertdialog" }, t("gateways.revokeConfirm", { name: g.name }), " ", yes, " ", no));
      paused = true;
    }

    function actions(g) {
      if (g.revoked) return "";
      const cell = h("span", { class: "row-actions" });
      replaceChildren(
        cell,
        h("button", { type: "button", class: "row-action", "data-testid": "admin-gateway-rotate", on: { click: () => rotate(g) } }, t("gateways.rotate")),
        " ",
        h("button", { type: "button", class: "row-action", "data-testid": "admin-gateway-revoke", on: { click: () => askRevoke(g, cell) } }, t("gateways.revoke")),
      );
      return cell;
    }

    function openCreate() {
      const name = h("input", { id: "gw-name", name: "name", required: true, maxlength: "64", pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]*", autocomplete: "off", spellcheck: "false" });
      const clinics = [...institutions.values()]
        .filter((i) => i.level === "township" || i.level === "village")
        .sort((a, b) => a.code.localeCompare(b.code));
      const clinic = h("select", { id: "gw-clinic", name: "clinic" }, clinics.map((i) => h("option", { value: i.code, title: i.code }, i.name)));
      const ae = h("input", { id: "gw-ae", name: "ae_title", maxlength: "16", autocomplete: "off", spellcheck: "false" });
      const form = h(
        "form",
        { class: "admin-form", id: "admin-gateway-form" },
        h("h2", {}, t("gateways.new")),
        h("div", { class: "admin-form-grid" },
          h("div", { class: "field" }, h("label", { for: "gw-name" }, t("gateways.form.name")), name, h("small", { class: "hint" }, t("gateways.form.nameHint"))),
          h("div", { class: "field" }, h("label", { for: "gw-clinic" }, t("gateways.form.clinic")), clinic),
          h("div", { class: "field" }, h("label", { for: "gw-ae" }, t("gateways.form.ae")), ae)),
        h("div", { class: "admin-form-buttons" },
          h("button", { type: "submit", class: "primary", "data-testid": "admin-gateway-submit" }, t("gateways.create")),
          h("button", { type: "button", on: { click: () => replaceChildren(formSlot) } }, t("gateways.cancel"))),
      );
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        try {
          const issued = await apiPost("/api/v1/admin/gateways", { name: name.value.trim(), clinic: clinic.value, ae_title: ae.value.trim() }, { signal });
          replaceChildren(formSlot);
          showToken(issued, false);
        } catch (err) {
          fail(err);
        }
        load();
      });
      replaceChildren(formSlot, form);
      name.focus();
    }

    root.appendChild(h("section", { class: "gateways-page" },
      h("div", { class: "page-head" },
        h("h1", {}, t("gateways.heading")),
        updated,
        h("button", { type: "button", class: "primary", id: "admin-gateway-new", "data-testid": "admin-gateway-new", on: { click: openCreate } }, t("gateways.new"))),
      errors, notice, tokenSlot, formSlot, body));
    let paused = false; // a revoke confirmation is open: the refresh waits for the answer
    async function load() {
      paused = false;
      try {
        const [data, insts] = await Promise.all([
          apiGet("/api/v1/admin/gateways", undefined, { signal }),
          loadInstitutions().catch(() => institutions),
        ]);
        institutions = insts;
        replaceChildren(errors);
        render(body, data, actions);
        updated.textContent = formatDateTime(new Date());
      } catch (err) {
        if (err.name !== "AbortError") replaceChildren(errors, messageBox("error", err.message));
      }
    }
    await load();
    const timer = setInterval(() => {
      if (document.visibilityState === "visible" && !paused) load();
    }, REFRESH_MS);
    return () => clearInterval(timer);
  },
});
