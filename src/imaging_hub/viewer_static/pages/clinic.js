// Clinic staff landing page (#/clinic): the clinic's own studies, newest first, from QIDO-RS
// (GET /dicomweb/studies, which the hub scopes to the caller's clinic), each linking to the
// study page. Each row also shows the hub's reading status and the report (GET
// /api/v1/studies/{uid}/report per row: study_status, the signed report and addenda): signed
// reports and addenda download as PDF; a critical result (危急值) stands out until a clinic user
// acknowledges it (method + read-back: POST /api/v1/reports/{id}/acknowledge).

import { addStrings, formatDateTime, formatDicomDate, t } from "../i18n.js";
import { apiGet, apiPost } from "../api.js";
import { h, messageBox, replaceChildren } from "../dom.js";
import { formatNumber, formatPersonName, formatSexAge, statusLabel } from "../format.js";
import { downloadReportPdf } from "./report_pane.js";
import { registerRoute, setQuery } from "../router.js";
import { TAG, first, number, personName, values } from "../dicomjson.js";

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

/** QIDO parameters for the clinic list: a PatientName substring match, newest first. */
export function clinicQuery(search, offset) {
  const term = search.trim().replace(/[*?\\]/g, "");
  return {
    PatientName: term ? `*${term}*` : undefined,
    limit: PAGE,
    offset: offset || undefined,
  };
}

const COLUMNS = [
  ["patient", "clinic.col.patient", (s, uid) => {
    const name = personName(s, TAG.PatientName);
    return h("a", { class: "patient-link", href: `#/study/${encodeURIComponent(uid)}`, title: name }, formatPersonName(name) || "—");
  }],
  ["patientId", "clinic.col.patientId", (s) => first(s, TAG.PatientID)],
  ["sexAge", "clinic.col.sexAge", (s) =>
    formatSexAge(first(s, TAG.PatientSex), first(s, TAG.PatientBirthDate), first(s, TAG.StudyDate))],
  ["date", "clinic.col.date", (s) => formatDicomDate(first(s, TAG.StudyDate))],
  ["modality", "clinic.col.modality", (s) => values(s, TAG.ModalitiesInStudy).join(", ")],
  ["description", "clinic.col.description", (s) => first(s, TAG.StudyDescription)],
  ["images", "clinic.col.images", (s) => {
    const n = number(s, TAG.NumberOfStudyRelatedInstances);
    return n === null ? "" : formatNumber(n);
  }],
];

const METHODS = ["phone", "portal", "in_person", "message"];
const STATUS_CONCURRENCY = 4;

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

    function reportButtons(chain) {
      const parts = [];
      const report = chain.report;
      if (!report) return parts;
      const fail = (err) => {
        if (err.name !== "AbortError") replaceChildren(status, messageBox("error", err.message));
      };
      parts.push(
        h(
          "button",
          { type: "button", class: "small", "data-testid": "report-download", dataset: { reportId: String(report.id) }, on: { click: () => downloadReportPdf(report, { signal }).catch(fail) } },
          t("clinic.download"),
        ),
      );
      chain.addenda.forEach((a, i) =>
        parts.push(
          h(
            "button",
            { type: "button", class: "small", "data-testid": "report-download-addendum", dataset: { reportId: String(a.id) }, on: { click: () => downloadReportPdf(a, { signal }).catch(fail) } },
            t("clinic.downloadAddendum", { n: i + 1 }),
          ),
        ),
      );
      return parts;
    }

    function fillRow(entry, chain) {
      const { row, statusCell, reportCell } = entry;
      row.dataset.status = chain.study_status;
      replaceChildren(statusCell, h("span", { class: ["chip", `status-${chain.study_status}`] }, statusLabel(chain.study_status)));
      const docs = [chain.report, ...chain.addenda].filter(Boolean);
      const criticalDoc = docs.find((d) => d.critical && !d.acknowledged_at) || docs.find((d) => d.critical);
      const parts = reportButtons(chain);
      row.classList.remove("critical-open");
      openCritical.delete(entry.uid);
      if (criticalDoc) {
        parts.unshift(h("span", { class: "chip critical-chip" }, t("clinic.critical", { category: criticalDoc.critical_category })));
        if (!criticalDoc.acknowledged_at) {
          row.classList.add("critical-open");
          openCritical.add(entry.uid);
          parts.push(
            h(
              "button",
              {
                type: "button",
                class: "small danger",
                "data-testid": "critical-acknowledge",
                on: { click: () => acknowledgeDialog(criticalDoc, { signal, onDone: () => refreshRow(entry) }) },
              },
              t("clinic.acknowledge"),
            ),
          );
        } else {
          parts.push(h("span", { class: "muted clinic-acked" }, t("clinic.acknowledged", { time: formatDateTime(criticalDoc.acknowledged_at) })));
        }
      }
      replaceChildren(reportCell, h("div", { class: "clinic-report-cell" }, parts));
      showCritical();
    }

    async function refreshRow(entry) {
      try {
        fillRow(entry, await apiGet(`/api/v1/studies/${encodeURIComponent(entry.uid)}/report`, undefined, { signal }));
      } catch (err) {
        if (err.name === "AbortError") return;
        replaceChildren(entry.statusCell, "—");
      }
    }

    async function fillReports(rows) {
      openCritical.clear();
      showCritical();
      const queue = rows.slice();
      const worker = async () => {
        while (queue.length) await refreshRow(queue.shift());
      };
      await Promise.all(Array.from({ length: STATUS_CONCURRENCY }, worker));
    }

    async function load() {
      setQuery({ patient: search.trim(), offset: offset || undefined });
      try {
        const studies = await apiGet("/dicomweb/studies", clinicQuery(search, offset), {
          signal,
          headers: { Accept: "application/dicom+json" },
        });
        const list = Array.isArray(studies) ? studies : [];
        const rows = [];
        replaceChildren(status);
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
          h(
            "tbody",
            {},
            list.map((s) => {
              const uid = first(s, TAG.StudyInstanceUID);
              const statusCell = h("td", { class: "col-status" });
              const reportCell = h("td", { class: "col-report" });
              const row = h(
                "tr",
                { "data-testid": "clinic-study-row", "data-study-uid": uid, "data-status": "", dataset: { uid } },
                COLUMNS.map(([key, , cell]) => h("td", { class: `col-${key}` }, cell(s, uid))),
                statusCell,
                reportCell,
              );
              rows.push({ uid, row, statusCell, reportCell });
              return row;
            }),
          ),
        );
        replaceChildren(wrap, table, list.length ? null : h("p", { class: "empty" }, t("clinic.empty")));
        replaceChildren(
          pager,
          h("button", { type: "button", id: "clinic-prev", disabled: offset === 0, on: { click: () => { offset = Math.max(0, offset - PAGE); load(); } } }, t("common.prev")),
          h("span", { class: "page-number" }, t("common.page", { n: Math.floor(offset / PAGE) + 1 })),
          h("button", { type: "button", id: "clinic-next", disabled: list.length < PAGE, on: { click: () => { offset += PAGE; load(); } } }, t("common.next")),
        );
        await fillReports(rows);
      } catch (err) {
        if (err.name !== "AbortError") replaceChildren(status, messageBox("error", err.message));
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
