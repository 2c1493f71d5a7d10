// Clinic staff landing page (#/clinic): the clinic's own studies, newest first, each linking to
// the study page, with the hub's reading status and the report facts — all from one request
// (GET /api/v1/clinic/studies?limit&offset&patient=, scoped to the caller's clinic by the hub):
// signed reports and addenda download as PDF; a critical result (危急值) stands out until a
// clinic user acknowledges it (method + read-back: POST /api/v1/reports/{id}/acknowledge; the
// dialog reads the report's text then, GET /api/v1/studies/{uid}/report).

import { addStrings, formatDateTime, formatDicomDate, t } from "../i18n.js";
import { apiGet, apiPost } from "../api.js";
import { h, messageBox, replaceChildren } from "../dom.js";
import { formatNumber, formatPersonName, formatSexAge, statusLabel } from "../format.js";
import { downloadReportPdf } from "./report_pane.js";
import { registerRoute, setQuery } from "../router.js";

addStrings({
  "zh-CN": {
    "clinic.title": "本院检查",
    "clinic.heading": "{institution}",
    "clinic.search": "患者姓名",
    "clinic.empty": "还没有本院的检查。",
    "clinic.col.patient": "患者姓名",
    "clinic.col.patientId": "患者 ID",
    "clinic.col.sexAge": "性别/年龄",
    "clinic.col.date": "检查日期",
    "clinic.col.modality": "类型",
    "clinic.col.description": "检查项目",
    "clinic.col.images": "图像",
    "clinic.col.status": "状态",
    "clinic.col.report": "报告",
    "clinic.intro": "这里列出已传到影像中心的本院检查（最新的在前），以及阅片状态和已签发的报告。",
    "clinic.download": "下载报告",
    "clinic.downloadAddendum": "补充报告 {n}",
    "clinic.critical": "危急值：{category}",
    "clinic.criticalOpen": "有 {n} 份危急值报告尚未确认接收，请尽快通知临床并确认。",
    "clinic.acknowledge": "确认接收危急值",
    "clinic.ackTitle": "确认接收危急值",
    "clinic.ackMethod": "通知方式",
    "clinic.ackReadBack": "复述内容（接收人复述的结果）",
    "clinic.ackConfirm": "确认",
    "clinic.ackCancel": "取消",
    "clinic.ackNeedReadBack": "请填写复述内容。",
    "clinic.acknowledged": "已确认 {time}",
    "clinic.method.phone": "电话",
    "clinic.method.portal": "门户",
    "clinic.method.in_person": "当面",
    "clinic.method.message": "消息",
  },
  en: {
    "clinic.title": "Our studies",
    "clinic.heading": "{institution}",
    "clinic.search": "Patient name",
    "clinic.empty": "No studies from your clinic yet.",
    "clinic.col.patient": "Patient name",
    "clinic.col.patientId": "Patient ID",
    "clinic.col.sexAge": "Sex/age",
    "clinic.col.date": "Study date",
    "clinic.col.modality": "Modality",
    "clinic.col.description": "Description",
    "clinic.col.images": "Images",
    "clinic.col.status": "Status",
    "clinic.col.report": "Report",
    "clinic.intro": "Your clinic's studies that reached the hub (newest first), with their reading status and signed reports.",
    "clinic.download": "Download report",
    "clinic.downloadAddendum": "Addendum {n}",
    "clinic.critical": "Critical result: {category}",
    "clinic.criticalOpen": "{n} critical result(s) not yet acknowledged: inform the clinician and acknowledge.",
    "clinic.acknowledge": "Acknowledge critical result",
    "clinic.ackTitle": "Acknowledge the critical result",
    "clinic.ackMethod": "How it was passed on",
    "clinic.ackReadBack": "Read-back (the result as the receiver repeated it)",
    "clinic.ackConfirm": "Acknowledge",
    "clinic.ackCancel": "Cancel",
    "clinic.ackNeedReadBack": "Enter the read-back.",
    "clinic.acknowledged": "Acknowledged {time}",
    "clinic.method.phone": "Phone",
    "clinic.method.portal": "Portal",
    "clinic.method.in_person": "In person",
    "clinic.method.message": "Message",
  },
});

const PAGE = 25;

/** Query parameters of GET /api/v1/clinic/studies for a search term and page offset. */
export function clinicQuery(search, offset) {
  const term = search.trim();
  return {
    patient: term || undefined,
    limit: PAGE,
    offset: offset || undefined,
  };
}

const COLUMNS = [
  ["patient", "clinic.col.patient", (s) =>
    h("a", { class: "patient-link", href: `#/study/${encodeURIComponent(s.study_instance_uid)}`, title: s.patient_name }, formatPersonName(s.patient_name) || "—")],
  ["patientId", "clinic.col.patientId", (s) => s.patient_id],
  ["sexAge", "clinic.col.sexAge", (s) => formatSexAge(s.patient_sex, s.patient_birth_date, s.study_date)],
  ["date", "clinic.col.date", (s) => formatDicomDate(s.study_date)],
  ["modality", "clinic.col.modality", (s) => (s.modalities || "").split("\\").filter(Boolean).join(", ")],
  ["description", "clinic.col.description", (s) => s.study_description],
  ["images", "clinic.col.images", (s) => formatNumber(s.num_instances)],
];

const METHODS = ["phone", "portal", "in_person", "message"];

/** A dialog asking how the critical result was passed on and its read-back; resolves after a successful POST. */
function acknowledgeDialog(report, { signal, onDone }) {
  const method = h(
    "select",
    { id: "critical-ack-method", "data-testid": "critical-ack-method" },
    METHODS.map((m) => h("option", { value: m }, t(`clinic.method.${m}`))),
  );
  const readBack = h("textarea", { id: "critical-ack-readback", "data-testid": "critical-ack-readback", rows: "3", maxlength: "4000", required: true });
  const error = h("div", { "aria-live": "assertive" });
  const confirm = h("button", { type: "submit", class: "primary", id: "critical-ack-confirm", "data-testid": "critical-ack-confirm" }, t("clinic.ackConfirm"));
  const form = h(
    "form",
    { method: "dialog", class: "report-sign-form" },
    h("h2", {}, t("clinic.ackTitle")),
    h("p", { class: "report-critical-band" }, t("clinic.critical", { category: report.critical_category })),
    h("p", { class: "report-text" }, report.impression),
    h("div", { class: "field" }, h("label", { for: "critical-ack-method" }, t("clinic.ackMethod")), method),
    h("div", { class: "field" }, h("label", { for: "critical-ack-readback" }, t("clinic.ackReadBack")), readBack),
    error,
    h("div", { class: "report-actions" }, h("button", { type: "button", on: { click: () => close() } }, t("clinic.ackCancel")), confirm),
  );
  const dialog = h("dialog", { class: "report-sign-dialog", id: "critical-ack-dialog", "aria-label": t("clinic.ackTitle") }, form);
  function close() {
    if (dialog.open) dialog.close();
    dialog.remove();
  }
  dialog.addEventListener("cancel", () => setTimeout(close));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!readBack.value.trim()) {
      replaceChildren(error, messageBox("error", t("clinic.ackNeedReadBack")));
      return;
    }
    confirm.disabled = true;
    try {
      await apiPost(`/api/v1/reports/${encodeURIComponent(report.id)}/acknowledge`, { method: method.value, read_back: readBack.value }, { signal });
      close();
      onDone();
    } catch (err) {
      if (err.name === "AbortError") return;
      confirm.disabled = false;
      replaceChildren(error, messageBox("error", err.message));
    }
  });
  document.body.appendChild(dialog);
  dialog.showModal();
  readBack.focus();
}

registerRoute({
  path: "/clinic",
  title: "clinic.title",
  roles: ["clinic_staff"],
  home: ["clinic_staff"],
  nav: true,
  order: 10,
  render({ root, user, query, signal }) {
    let search = (query.get("patient") || "").slice(0, 64);
    let offset = Math.max(0, Number(query.get("offset")) || 0);
    const status = h("div", { "aria-live": "polite" });
    const wrap = h("div", { class: "table-wrap" });
    const pager = h("div", { class: "pager" });
    const input = h("input", { id: "clinic-search", type: "search", value: search, maxlength: "64", autocomplete: "off" });
    let debounce = null;
    input.addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => {
        search = input.value;
        offset = 0;
        load();
      }, 300);
    });

    const critical = h("div", { class: "clinic-critical", id: "clinic-critical", "aria-live": "polite" });
    const openCritical = new Set();
    const showCritical = () =>
      replaceChildren(critical, openCritical.size ? h("p", { class: "message message-error clinic-critical-banner", role: "alert" }, t("clinic.criticalOpen", { n: openCritical.size })) : null);

    const fail = (err) => {
      if (err.name !== "AbortError") replaceChildren(status, messageBox("error", err.message));
    };

    function reportButtons(item) {
      const parts = [];
      if (!item.report_id) return parts;
      parts.push(
        h(
          "button",
          { type: "button", class: "small", "data-testid": "report-download", dataset: { reportId: String(item.report_id) }, on: { click: () => downloadReportPdf({ id: item.report_id }, { signal }).catch(fail) } },
          t("clinic.download"),
        ),
      );
      item.addenda.forEach((id, i) =>
        parts.push(
          h(
            "button",
            { type: "button", class: "small", "data-testid": "report-download-addendum", dataset: { reportId: String(id) }, on: { click: () => downloadReportPdf({ id }, { signal }).catch(fail) } },
            t("clinic.downloadAddendum", { n: i + 1 }),
          ),
        ),
      );
      return parts;
    }

    /** The critical document's text for the dialog (the list carries no report text). */
    async function acknowledge(item) {
      try {
        const chain = await apiGet(`/api/v1/studies/${encodeURIComponent(item.study_instance_uid)}/report`, undefined, { signal });
        const doc = [chain.report, ...chain.addenda].find((d) => d && d.id === item.critical_report_id);
        acknowledgeDialog(doc || { id: item.critical_report_id, critical_category: item.critical_category, impression: "" }, { signal, onDone: () => load() });
      } catch (err) {
        fail(err);
      }
    }

    function studyRow(item) {
      const uid = item.study_instance_uid;
      const parts = reportButtons(item);
      const row = h(
        "tr",
        { "data-testid": "clinic-study-row", "data-study-uid": uid, "data-status": item.status, dataset: { uid } },
        COLUMNS.map(([key, , cell]) => h("td", { class: `col-${key}` }, cell(item))),
        h("td", { class: "col-status" }, h("span", { class: ["chip", `status-${item.status}`] }, statusLabel(item.status))),
        h("td", { class: "col-report" }, h("div", { class: "clinic-report-cell" }, parts)),
      );
      if (item.critical) {
        parts.unshift(h("span", { class: "chip critical-chip" }, t("clinic.critical", { category: item.critical_category })));
        if (!item.acknowledged) {
          row.classList.add("critical-open");
          openCritical.add(uid);
          parts.push(
            h(
              "button",
              { type: "button", class: "small danger", "data-testid": "critical-acknowledge", on: { click: () => acknowledge(item) } },
              t("clinic.acknowledge"),
            ),
          );
        } else {
          parts.push(h("span", { class: "muted clinic-acked" }, t("clinic.acknowledged", { time: formatDateTime(item.acknowledged_at) })));
        }
        replaceChildren(row.querySelector(".clinic-report-cell"), parts);
      }
      return row;
    }

    async function load() {
      setQuery({ patient: search.trim(), offset: offset || undefined });
      try {
        const page = await apiGet("/api/v1/clinic/studies", clinicQuery(search, offset), { signal });
        const list = (page && page.items) || [];
        replaceChildren(status);
        openCritical.clear();
        const table = h(
          "table",
          { class: "worklist", id: "clinic-studies" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              COLUMNS.map(([key, label]) => h("th", { scope: "col", class: `col-${key}` }, t(label))),
              h("th", { scope: "col", class: "col-status" }, t("clinic.col.status")),
              h("th", { scope: "col", class: "col-report" }, t("clinic.col.report")),
            ),
          ),
          h("tbody", {}, list.map(studyRow)),
        );
        showCritical();
        replaceChildren(wrap, table, list.length ? null : h("p", { class: "empty" }, t("clinic.empty")));
        replaceChildren(
          pager,
          h("button", { type: "button", id: "clinic-prev", disabled: offset === 0, on: { click: () => { offset = Math.max(0, offset - PAGE); load(); } } }, t("common.prev")),
          h("span", { class: "page-number" }, t("common.page", { n: Math.floor(offset / PAGE) + 1 })),
          h("button", { type: "button", id: "clinic-next", disabled: list.length < PAGE, on: { click: () => { offset += PAGE; load(); } } }, t("common.next")),
        );
      } catch (err) {
        fail(err);
      }
    }

    root.appendChild(
      h(
        "section",
        { class: "clinic-page" },
        h("h1", {}, t("clinic.heading", { institution: user.institution_name })),
        h("p", { class: "clinic-intro muted", id: "clinic-intro" }, t("clinic.intro")),
        critical,
        h("form", { class: "filters", role: "search", on: { submit: (e) => e.preventDefault() } },
          h("div", { class: "field field-wide" }, h("label", { for: "clinic-search" }, t("clinic.search")), input)),
        status,
        wrap,
        pager,
      ),
    );
    load();
    return () => clearTimeout(debounce);
  },
});
