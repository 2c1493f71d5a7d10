// Statistics dashboard (#/dashboard, administrators): volume per clinic per day, turnaround
// percentiles by priority, SLA compliance and per-radiologist workload, all from
// GET /api/v1/stats/*. Charts are SVG built with createElementNS (no library, no CDN, no inline
// style: colours come from style.css classes). Every chart has its data table next to it.

import { addStrings, t } from "../i18n.js";
import { apiGet } from "../api.js";
import { clear, h, messageBox, replaceChildren } from "../dom.js";
import { formatNumber, priorityLabel } from "../format.js";
import { registerRoute, setQuery } from "../router.js";
import { institutionName, loadInstitutions } from "../institutions.js";

addStrings({
  "zh-CN": {
    "dashboard.title": "统计",
    "dashboard.start": "开始日期",
    "dashboard.end": "结束日期",
    "dashboard.apply": "查询",
    "dashboard.window": "{start} 至 {end}（{tz}）",
    "dashboard.volume": "各卫生院每日检查量",
    "dashboard.turnaround": "报告周转时间（完成至签发，分钟）",
    "dashboard.sla": "时限达标率",
    "dashboard.workload": "医生工作量",
    "dashboard.noData": "此期间没有数据。",
    "dashboard.day": "日期",
    "dashboard.clinic": "卫生院",
    "dashboard.studies": "检查数",
    "dashboard.priority": "优先级",
    "dashboard.count": "已签发",
    "dashboard.due": "应完成",
    "dashboard.met": "按时",
    "dashboard.missed": "超时",
    "dashboard.pending": "进行中",
    "dashboard.compliance": "达标率",
    "dashboard.radiologist": "医生",
    "dashboard.claimed": "领取",
    "dashboard.signed": "签发",
    "dashboard.inProgress": "阅片中",
    "dashboard.escalated": "会诊中",
    "dashboard.total": "合计 {n}",
  },
  en: {
    "dashboard.title": "Statistics",
    "dashboard.start": "From",
    "dashboard.end": "To",
    "dashboard.apply": "Show",
    "dashboard.window": "{start} to {end} ({tz})",
    "dashboard.volume": "Studies per clinic per day",
    "dashboard.turnaround": "Turnaround (complete to signed, minutes)",
    "dashboard.sla": "SLA compliance",
    "dashboard.workload": "Radiologist workload",
    "dashboard.noData": "No data in this period.",
    "dashboard.day": "Day",
    "dashboard.clinic": "Clinic",
    "dashboard.studies": "Studies",
    "dashboard.priority": "Priority",
    "dashboard.count": "Signed",
    "dashboard.due": "Due",
    "dashboard.met": "On time",
    "dashboard.missed": "Late",
    "dashboard.pending": "Pending",
    "dashboard.compliance": "Compliance",
    "dashboard.radiologist": "Radiologist",
    "dashboard.claimed": "Claimed",
    "dashboard.signed": "Signed",
    "dashboard.inProgress": "In progress",
    "dashboard.escalated": "Escalated",
    "dashboard.total": "Total {n}",
  },
});

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = 8; // .chart-c0 … .chart-c7 in style.css

/** An SVG element; attribute values are set with setAttribute (text via textContent). */
function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  if (text !== undefined) el.textContent = String(text);
  return el;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * magnitude) return step * magnitude;
  }
  return 10 * magnitude;
}

/**
 * A bar chart: groups along x, each with bars (stacked or side by side).
 * groups: [{ label, values: [number|null] }], series: [{ label }]
 */
function barChart({ groups, series, stacked, unit, id, format = formatNumber }) {
  const width = 640;
  const height = 240;
  const pad = { left: 48, right: 8, top: 12, bottom: 44 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const totals = groups.map((g) =>
    stacked
      ? g.values.reduce((a, v) => a + (v || 0), 0)
      : Math.max(0, ...g.values.map((v) => v || 0)),
  );
  const max = niceMax(Math.max(0, ...totals));
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart",
    role: "img",
    id,
    "aria-label": unit || "",
  });
  for (let i = 0; i <= 4; i += 1) {
    const y = pad.top + plotH - (plotH * i) / 4;
    svg.appendChild(s("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "chart-grid" }));
    svg.appendChild(
      s("text", { x: pad.left - 6, y: y + 4, class: "chart-axis", "text-anchor": "end" }, format((max * i) / 4)),
    );
  }
  const slot = plotW / Math.max(1, groups.length);
  const barW = Math.max(2, Math.min(48, stacked ? slot * 0.7 : (slot * 0.8) / series.length));
  groups.forEach((group, gi) => {
    const x0 = pad.left + gi * slot + (slot - (stacked ? barW : barW * series.length)) / 2;
    let base = 0;
    group.values.forEach((value, si) => {
      if (value === null || value === undefined) return;
      const hgt = (plotH * value) / max;
      const x = stacked ? x0 : x0 + si * barW;
      const y = pad.top + plotH - hgt - (stacked ? (plotH * base) / max : 0);
      const rect = s("rect", {
        x,
        y,
        width: barW,
        height: Math.max(0, hgt),
        class: `chart-bar chart-c${si % PALETTE}`,
        "data-series": series[si].label,
        "data-group": group.label,
        "data-value": value,
      });
      rect.appendChild(s("title", {}, `${group.label} · ${series[si].label}: ${format(value)}`));
      svg.appendChild(rect);
      if (stacked) base += value;
    });
    const every = Math.ceil(groups.length / 12);
    if (gi % every === 0) {
      svg.appendChild(
        s(
          "text",
          { x: pad.left + gi * slot + slot / 2, y: height - pad.bottom + 16, class: "chart-axis", "text-anchor": "middle" },
          group.label,
        ),
      );
    }
  });
  const legend = h(
    "ul",
    { class: "chart-legend" },
    series.map((item, si) => h("li", {}, h("span", { class: `swatch chart-c${si % PALETTE}`, "aria-hidden": "true" }), item.label)),
  );
  return h("div", { class: "chart-box" }, svg, legend);
}

function table(headers, rows, id) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "data", id },
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c === null || c === undefined ? "–" : String(c)))))),
    ),
  );
}

function panel(titleKey, id, ...children) {
  return h("section", { class: "panel", id }, h("h2", {}, t(titleKey)), ...children);
}

function volumePanel(data, institutions) {
  const name = (code) => institutionName(institutions, code);
  if (!data.rows.length) return panel("dashboard.volume", "stats-volume", messageBox("info", t("dashboard.noData")));
  const days = [...new Set(data.rows.map((r) => r.day))].sort();
  const clinics = [...new Set(data.rows.map((r) => r.clinic))].sort();
  const count = new Map(data.rows.map((r) => [`${r.day}|${r.clinic}`, r.studies]));
  const groups = days.map((day) => ({
    label: day.slice(5),
    values: clinics.map((c) => count.get(`${day}|${c}`) || 0),
  }));
  const total = data.rows.reduce((a, r) => a + r.studies, 0);
  return panel(
    "dashboard.volume",
    "stats-volume",
    h("p", { class: "muted" }, t("dashboard.total", { n: formatNumber(total) })),
    barChart({ groups, series: clinics.map((c) => ({ label: name(c) })), stacked: true, id: "chart-volume" }),
    table(
      [t("dashboard.day"), t("dashboard.clinic"), t("dashboard.studies")],
      data.rows.map((r) => [r.day, name(r.clinic), formatNumber(r.studies)]),
      "table-volume",
    ),
  );
}

function turnaroundPanel(data) {
  const rows = data.rows;
  const groups = rows.map((r) => ({
    label: priorityLabel(r.priority),
    values: [r.p50_minutes, r.p90_minutes, r.p95_minutes],
  }));
  return panel(
    "dashboard.turnaround",
    "stats-turnaround",
    barChart({
      groups,
      series: [{ label: "p50" }, { label: "p90" }, { label: "p95" }],
      stacked: false,
      id: "chart-turnaround",
    }),
    table(
      [t("dashboard.priority"), t("dashboard.count"), "p50", "p90", "p95"],
      rows.map((r) => [priorityLabel(r.priority), r.count, r.p50_minutes, r.p90_minutes, r.p95_minutes]),
      "table-turnaround",
    ),
  );
}

function percent(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}%`;
}

function slaPanel(data) {
  const rows = data.rows;
  const groups = rows.map((r) => ({ label: priorityLabel(r.priority), values: [r.met, r.missed, r.pending] }));
  return panel(
    "dashboard.sla",
    "stats-sla",
    barChart({
      groups,
      series: [{ label: t("dashboard.met") }, { label: t("dashboard.missed") }, { label: t("dashboard.pending") }],
      stacked: true,
      id: "chart-sla",
    }),
    table(
      [t("dashboard.priority"), t("dashboard.due"), t("dashboard.met"), t("dashboard.missed"), t("dashboard.pending"), t("dashboard.compliance")],
      rows.map((r) => [priorityLabel(r.priority), r.due, r.met, r.missed, r.pending, percent(r.compliance)]),
      "table-sla",
    ),
  );
}

function workloadPanel(data) {
  const rows = data.rows;
  const groups = rows.map((r) => ({ label: r.display_name || r.username, values: [r.claimed, r.signed] }));
  return panel(
    "dashboard.workload",
    "stats-workload",
    barChart({
      groups,
      series: [{ label: t("dashboard.claimed") }, { label: t("dashboard.signed") }],
      stacked: false,
      id: "chart-workload",
    }),
    table(
      [t("dashboard.radiologist"), t("dashboard.claimed"), t("dashboard.signed"), t("dashboard.inProgress"), t("dashboard.escalated")],
      rows.map((r) => [r.display_name || r.username, r.claimed, r.signed, r.in_progress, r.escalated]),
      "table-workload",
    ),
  );
}

const DATE = /^\d{4}-\d{2}-\d{2}$/;

async function renderDashboard({ root, query, signal }) {
  const params = {};
  for (const key of ["start", "end"]) {
    const value = query.get(key);
    if (value && DATE.test(value)) params[key] = value;
  }
  const start = h("input", { type: "date", id: "stats-start", name: "start", value: params.start || "" });
  const end = h("input", { type: "date", id: "stats-end", name: "end", value: params.end || "" });
  const body = h("div", { class: "dashboard", id: "dashboard" }, h("p", { class: "loading" }, t("app.loading")));
  const form = h(
    "form",
    {
      class: "filters",
      on: {
        submit: (event) => {
          event.preventDefault();
          setQuery({ start: start.value, end: end.value });
          load({ start: start.value || undefined, end: end.value || undefined });
        },
      },
    },
    h("label", {}, t("dashboard.start"), " ", start),
    h("label", {}, t("dashboard.end"), " ", end),
    h("button", { type: "submit", id: "stats-apply" }, t("dashboard.apply")),
  );
  const caption = h("p", { class: "muted", id: "stats-window" });
  clear(root);
  root.appendChild(h("div", { class: "page-head" }, h("h1", {}, t("dashboard.title"))));
  root.appendChild(form);
  root.appendChild(caption);
  root.appendChild(body);

  async function load(window) {
    try {
      const [institutions, volume, turnaround, sla, workload] = await Promise.all([
        loadInstitutions().catch(() => new Map()),
        ...["volume", "turnaround", "sla", "workload"].map((name) =>
          apiGet(`/api/v1/stats/${name}`, window, { signal }),
        ),
      ]);
      const w = volume.window;
      caption.textContent = t("dashboard.window", { start: w.start, end: w.end, tz: w.timezone });
      start.value = w.start;
      end.value = w.end;
      replaceChildren(body, volumePanel(volume, institutions), turnaroundPanel(turnaround), slaPanel(sla), workloadPanel(workload));
    } catch (err) {
      if (err && err.name === "AbortError") return;
      replaceChildren(body, messageBox("error", err && err.message ? err.message : String(err)));
    }
  }

  await load(params);
}

registerRoute({
  path: "/dashboard",
  title: "dashboard.title",
  roles: ["admin"],
  nav: true,
  order: 30,
  render: renderDashboard,
});
