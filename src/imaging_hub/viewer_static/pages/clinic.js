// Clinic portal (#/clinic), the clinic staff's landing page (docs/clinic-return.md):
// - "new exam order" (`order-new` opens pages/order_form.js; `order-submit` sends it);
// - the clinic's exams, orders without images included, newest first — one request per page
//   (GET /api/v1/clinic/studies?limit&offset&patient=, scoped to the caller's clinic by the hub),
//   refreshed every 15 s without touching the order form. One `clinic-study-row` per exam with
//   `data-study-uid` and `data-status` = the hub's `stage` (ordered … acknowledged, cancelled,
//   discontinued), shown as a coloured label in the user's language;
// - per row: the signed PDF and its addenda (`report-download`, `report-print`), "exam done" for
//   an exam that is ordered, scanning or receiving (POST /api/v1/orders/{id}/done, confirmed
//   first), cancelling an ordered exam with a reason (POST /api/v1/orders/{id}/cancel);
// - critical results (危急值) in a red band above the list until a clinic user acknowledges each
//   (`critical-acknowledge`: method + read-back, POST /api/v1/reports/{id}/acknowledge; the
//   dialog reads the report's text then, GET /api/v1/studies/{uid}/report).
// Everything from the API goes into the page as text (h()).

import { addStrings, formatDateTime, getLanguage, minutesUntil, t } from "../i18n.js";
import { apiBlob, apiGet, apiPost } from "../api.js";
import { h, messageBox, replaceChildren } from "../dom.js";
import { formatPersonName, formatSexAge, priorityLabel } from "../format.js";
import { downloadReportPdf } from "./report_pane.js";
import { examTypeDetail, examTypeName, loadExamTypes, orderForm } from "./order_form.js";
import { can, onUserChange, registerRoute, setQuery } from "../router.js";

addStrings({
  "zh-CN": {
    "clinic.title": "本院检查",
    "clinic.heading": "{institution}",
    "clinic.search": "患者姓名或 ID",
    "clinic.empty": "还没有本院的检查。",
    "clinic.emptySearch": "没有符合条件的检查。",
    "clinic.col.patient": "患者",
    "clinic.col.exam": "检查项目",
    "clinic.col.accession": "检查号",
    "clinic.col.priority": "优先级",
    "clinic.col.due": "报告时限",
    "clinic.col.status": "状态",
    "clinic.col.radiologist": "阅片医生",
    "clinic.col.report": "报告与操作",
    "clinic.intro": "本院的检查申请和检查（最新的在前）：检查进度、阅片状态和已签发的报告。列表每 15 秒自动刷新。",
    "clinic.updated": "更新于 {time}",
    "clinic.refresh": "刷新",
    "clinic.images": "图像 {n} 幅",
    "clinic.scheduled": "预约 {time}",
    "clinic.question": "临床问题：{text}",
    "clinic.overdue": "已超时 {n} 分钟",
    "clinic.download": "下载报告",
    "clinic.downloadTitle": "下载已签名的报告 PDF",
    "clinic.downloadAddendum": "补充报告 {n}",
    "clinic.print": "打印报告",
    "clinic.printAddendum": "打印补充报告 {n}",
    "clinic.printShort": "打印",
    "clinic.critical": "危急值：{category}",
    "clinic.criticalOpen": "有 {n} 份危急值报告尚未确认接收，请尽快通知临床并确认。",
    "clinic.criticalItem": "{patient} · {exam} · {category}",
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
    "clinic.done": "检查完成",
    "clinic.doneTitle": "确认检查已完成？",
    "clinic.doneText": "{patient} 的 {exam}（检查号 {accession}）已做完，图像全部发出后即可阅片。设备支持 MPPS 时无需点击。",
    "clinic.doneConfirm": "确认完成",
    "clinic.doneOk": "已标记为检查完成：{accession}",
    "clinic.cancel": "取消申请",
    "clinic.cancelTitle": "取消检查申请",
    "clinic.cancelText": "{patient} 的 {exam}（检查号 {accession}）将被取消，设备的工作列表中不再显示。",
    "clinic.cancelReason": "取消原因",
    "clinic.cancelNeedReason": "请填写取消原因。",
    "clinic.cancelReasonInvalid": "取消原因过长或含有不允许的字符。",
    "clinic.cancelConfirm": "取消此申请",
    "clinic.cancelOk": "检查申请已取消：{accession}",
    "clinic.back": "返回",
    "clinic.stage.ordered": "已申请",
    "clinic.stage.scanning": "检查中",
    "clinic.stage.receiving": "图像接收中",
    "clinic.stage.waiting": "待阅片",
    "clinic.stage.reading": "阅片中",
    "clinic.stage.signed": "已签发",
    "clinic.stage.delivered": "报告已送达",
    "clinic.stage.acknowledged": "已确认接收",
    "clinic.stage.discontinued": "检查中止",
    "clinic.stage.cancelled": "已取消",
  },
  en: {
    "clinic.title": "Our exams",
    "clinic.heading": "{institution}",
    "clinic.search": "Patient name or ID",
    "clinic.empty": "No exams from your clinic yet.",
    "clinic.emptySearch": "No exams match.",
    "clinic.col.patient": "Patient",
    "clinic.col.exam": "Exam",
    "clinic.col.accession": "Accession",
    "clinic.col.priority": "Priority",
    "clinic.col.due": "Report due",
    "clinic.col.status": "Status",
    "clinic.col.radiologist": "Radiologist",
    "clinic.col.report": "Report and actions",
    "clinic.intro": "Your clinic's orders and exams (newest first): progress, reading status and signed reports. The list refreshes every 15 s.",
    "clinic.updated": "Updated {time}",
    "clinic.refresh": "Refresh",
    "clinic.images": "Images: {n}",
    "clinic.scheduled": "Scheduled {time}",
    "clinic.question": "Clinical question: {text}",
    "clinic.overdue": "Overdue by {n} min",
    "clinic.download": "Download report",
    "clinic.downloadTitle": "Download the signed report PDF",
    "clinic.downloadAddendum": "Addendum {n}",
    "clinic.print": "Print the report",
    "clinic.printAddendum": "Print addendum {n}",
    "clinic.printShort": "Print",
    "clinic.critical": "Critical result: {category}",
    "clinic.criticalOpen": "{n} critical result(s) not yet acknowledged: inform the clinician and acknowledge.",
    "clinic.criticalItem": "{patient} · {exam} · {category}",
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
    "clinic.done": "Exam done",
    "clinic.doneTitle": "Is the exam done?",
    "clinic.doneText": "{exam} of {patient} (accession {accession}) is finished; it is read once all its images are sent. Not needed when the machine sends MPPS.",
    "clinic.doneConfirm": "Exam done",
    "clinic.doneOk": "Marked as done: {accession}",
    "clinic.cancel": "Cancel order",
    "clinic.cancelTitle": "Cancel the exam order",
    "clinic.cancelText": "{exam} of {patient} (accession {accession}) is cancelled and leaves the machines' worklist.",
    "clinic.cancelReason": "Reason",
    "clinic.cancelNeedReason": "Enter the reason.",
    "clinic.cancelReasonInvalid": "The reason is too long or holds characters that cannot be kept.",
    "clinic.cancelConfirm": "Cancel this order",
    "clinic.cancelOk": "Order cancelled: {accession}",
    "clinic.back": "Back",
    "clinic.stage.ordered": "Ordered",
    "clinic.stage.scanning": "Scanning",
    "clinic.stage.receiving": "Receiving images",
    "clinic.stage.waiting": "Waiting for reading",
    "clinic.stage.reading": "Being read",
    "clinic.stage.signed": "Signed",
    "clinic.stage.delivered": "Report delivered",
    "clinic.stage.acknowledged": "Acknowledged",
    "clinic.stage.discontinued": "Discontinued",
    "clinic.stage.cancelled": "Cancelled",
  },
});

const PAGE = 25;
const REFRESH_MS = 15000;
export const STAGES = ["ordered", "scanning", "receiving", "waiting", "reading", "signed", "delivered", "acknowledged", "discontinued", "cancelled"];
// The hub's study status → the portal's stage, for a row without `stage`.
const STAGE_OF_STATUS = { receiving: "receiving", unread: "waiting", in_progress: "reading", escalated: "reading", signed: "signed", delivered: "delivered", acknowledged: "acknowledged", cancelled: "cancelled" };
// Stages whose report is still to come: a passed due time is shown as overdue.
const OPEN_STAGES = new Set(["receiving", "waiting", "reading"]);
const DONE_STAGES = new Set(["ordered", "scanning", "receiving"]);
// Test hooks of the download and print buttons (literal, so tests/unit/test_browser_hooks.py finds them).
const REPORT_HOOKS = { download: { "data-testid": "report-download" }, print: { "data-testid": "report-print" } };
const ADDENDUM_HOOKS = { download: { "data-testid": "report-download-addendum" }, print: { "data-testid": "report-print-addendum" } };
const METHODS = ["phone", "portal", "in_person", "message"];

// Whether the order form is open: kept over re-renders (language switch) of the page.
let formOpen = false;
// Orders marked "exam done" from this page, for rows that do not say so themselves (`done_at`):
// an order whose images have not reached the hub stays `scanning` after "exam done".
const doneHere = new Set();
// A logout (or another user) starts afresh: the form folded, nothing remembered.
onUserChange(() => {
  formOpen = false;
  doneHere.clear();
});

/** Query parameters of GET /api/v1/clinic/studies for a search term and page offset. */
export function clinicQuery(search, offset) {
  const term = search.trim();
  return {
    patient: term || undefined,
    limit: PAGE,
    offset: offset || undefined,
  };
}

/** A row's portal stage: the hub's `stage`, else derived from its study status. */
export function stageOf(item) {
  if (item.stage && STAGES.includes(item.stage)) return item.stage;
  return STAGE_OF_STATUS[item.status] || item.stage || item.status || "ordered";
}

export function stageLabel(stage) {
  return STAGES.includes(stage) ? t(`clinic.stage.${stage}`) : String(stage || "");
}

/** The exam's name: from the catalogue by `exam_type`, else the study description. */
function examName(item, types) {
  const type = item.exam_type ? types.get(item.exam_type) : null;
  if (type) return examTypeName(type);
  return item.exam_type || item.study_description || item.requested_procedure_description || "—";
}

/** A modal dialog: title, text, optional fields; `action()` does the call, errors stay in the dialog. */
function actionDialog({ id, title, text, body = [], confirmLabel, danger = false, action, initialFocus }) {
  const error = h("div", { "aria-live": "assertive" });
  const confirm = h("button", { type: "submit", class: danger ? "danger" : "primary", id: `${id}-confirm`, "data-testid": `${id}-confirm` }, confirmLabel);
  const form = h(
    "form",
    { method: "dialog", class: "report-sign-form", novalidate: true },
    h("h2", {}, title),
    text ? h("p", { class: "dialog-text" }, text) : null,
    body,
    error,
    h("div", { class: "report-actions" }, h("button", { type: "button", id: `${id}-back`, on: { click: () => close() } }, t("clinic.back")), confirm),
  );
  const dialog = h("dialog", { class: "report-sign-dialog", id, "aria-label": title }, form);
  function close() {
    if (dialog.open) dialog.close();
    dialog.remove();
  }
  dialog.addEventListener("cancel", () => setTimeout(close));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    replaceChildren(error);
    confirm.disabled = true;
    try {
      const message = await action();
      if (message) {
        replaceChildren(error, messageBox("error", message));
        confirm.disabled = false;
        return;
      }
      close();
    } catch (err) {
      confirm.disabled = false;
      if (err.name !== "AbortError") replaceChildren(error, messageBox("error", err.message));
    }
  });
  document.getElementById(id)?.remove();
  document.body.appendChild(dialog);
  dialog.showModal();
  (initialFocus || confirm).focus();
  return { close };
}

/** A dialog asking how the critical result was passed on and its read-back. */
function acknowledgeDialog(report, { signal, onDone }) {
  const method = h(
    "select",
    { id: "critical-ack-method", "data-testid": "critical-ack-method" },
    METHODS.map((m) => h("option", { value: m }, t(`clinic.method.${m}`))),
  );
  const readBack = h("textarea", { id: "critical-ack-readback", "data-testid": "critical-ack-readback", rows: "3", maxlength: "4000", required: true });
  actionDialog({
    id: "critical-ack",
    title: t("clinic.ackTitle"),
    confirmLabel: t("clinic.ackConfirm"),
    danger: true,
    initialFocus: readBack,
    body: [
      h("p", { class: "report-critical-band" }, t("clinic.critical", { category: report.critical_category })),
      h("p", { class: "report-text" }, report.impression),
      h("div", { class: "field" }, h("label", { for: "critical-ack-method" }, t("clinic.ackMethod")), method),
      h("div", { class: "field" }, h("label", { for: "critical-ack-readback" }, t("clinic.ackReadBack")), readBack),
    ],
    action: async () => {
      if (!readBack.value.trim()) return t("clinic.ackNeedReadBack");
      await apiPost(`/api/v1/reports/${encodeURIComponent(report.id)}/acknowledge`, { method: method.value, read_back: readBack.value }, { signal });
      onDone();
      return null;
    },
  });
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
    let types = new Map();
    let loading = false;
    const status = h("div", { class: "clinic-messages", "aria-live": "polite" });
    const updated = h("span", { class: "updated", id: "clinic-updated" });
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
    const fail = (err) => {
      if (err.name !== "AbortError") replaceChildren(status, messageBox("error", err.message));
    };
    const note = (text) => replaceChildren(status, messageBox("ok", text));

    // The order form: folded away until `order-new`; open over re-renders.
    const formSlot = h("div", { class: "order-slot", id: "order-slot" });
    const newButton = h(
      "button",
      { type: "button", class: "primary order-new", id: "order-new", "data-testid": "order-new", "aria-expanded": "false", "aria-controls": "order-slot" },
      t("order.new"),
    );
    function openForm(focus) {
      formOpen = true;
      newButton.setAttribute("aria-expanded", "true");
      newButton.hidden = true;
      const form = orderForm({
        signal,
        onCreated: () => load(),
        onClose: () => closeForm(),
      });
      replaceChildren(formSlot, form.element);
      if (focus) form.focus();
    }
    function closeForm() {
      formOpen = false;
      newButton.setAttribute("aria-expanded", "false");
      newButton.hidden = false;
      replaceChildren(formSlot);
      newButton.focus();
    }
    newButton.addEventListener("click", () => openForm(true));

    const describe = (item, types_) => ({
      patient: formatPersonName(item.patient_name) || item.patient_id || "—",
      exam: examName(item, types_),
      accession: item.accession_number || "—",
    });

    /**
     * The signed PDF in a new tab, in the browser's PDF viewer, to print. The tab is opened at
     * the click (a popup blocker lets it through) and pointed at the PDF once it is here.
     */
    async function printReportPdf(id) {
      const tab = window.open("", "_blank");
      try {
        const blob = await apiBlob(`/api/v1/reports/${encodeURIComponent(id)}/pdf`, undefined, { signal });
        const url = URL.createObjectURL(blob);
        if (tab) {
          tab.opener = null;
          tab.location.href = url;
        } else {
          window.open(url, "_blank", "noopener");
        }
        setTimeout(() => URL.revokeObjectURL(url), 60000);
      } catch (err) {
        if (tab) tab.close();
        fail(err);
      }
    }

    /** Download and print buttons of the signed report and each addendum. */
    function reportButtons(item) {
      const parts = [];
      if (!item.report_id) return parts;
      const docs = [
        { id: item.report_id, hooks: REPORT_HOOKS, download: t("clinic.download"), print: t("clinic.print") },
        ...(item.addenda || []).map((id, i) => ({
          id,
          hooks: ADDENDUM_HOOKS,
          download: t("clinic.downloadAddendum", { n: i + 1 }),
          print: t("clinic.printAddendum", { n: i + 1 }),
        })),
      ];
      for (const doc of docs) {
        const reportId = String(doc.id);
        parts.push(
          h(
            "span",
            { class: "report-buttons" },
            h(
              "button",
              {
                type: "button",
                class: "small",
                ...doc.hooks.download,
                title: t("clinic.downloadTitle"),
                dataset: { reportId },
                on: { click: () => downloadReportPdf({ id: doc.id }, { signal }).catch(fail) },
              },
              doc.download,
            ),
            h(
              "button",
              { type: "button", class: "small", ...doc.hooks.print, title: doc.print, "aria-label": doc.print, dataset: { reportId }, on: { click: () => printReportPdf(doc.id) } },
              t("clinic.printShort"),
            ),
          ),
        );
      }
      return parts;
    }

    /** The critical document's text for the dialog (the list carries no report text). */
    async function acknowledge(item) {
      try {
        const chain = await apiGet(`/api/v1/studies/${encodeURIComponent(item.study_instance_uid)}/report`, undefined, { signal });
        const doc = [chain.report, ...(chain.addenda || [])].find((d) => d && d.id === item.critical_report_id);
        acknowledgeDialog(doc || { id: item.critical_report_id, critical_category: item.critical_category, impression: "" }, { signal, onDone: () => load() });
      } catch (err) {
        fail(err);
      }
    }

    function examDone(item) {
      const d = describe(item, types);
      actionDialog({
        id: "order-done",
        title: t("clinic.doneTitle"),
        text: t("clinic.doneText", d),
        confirmLabel: t("clinic.doneConfirm"),
        action: async () => {
          await apiPost(`/api/v1/orders/${encodeURIComponent(item.order_id)}/done`, {}, { signal });
          doneHere.add(item.order_id);
          note(t("clinic.doneOk", d));
          load();
          return null;
        },
      });
    }

    function cancelOrder(item) {
      const d = describe(item, types);
      const reason = h("textarea", { id: "order-cancel-reason", "data-testid": "order-cancel-reason", rows: "2", maxlength: "200", required: true });
      actionDialog({
        id: "order-cancel",
        title: t("clinic.cancelTitle"),
        text: t("clinic.cancelText", d),
        confirmLabel: t("clinic.cancelConfirm"),
        danger: true,
        initialFocus: reason,
        body: h("div", { class: "field" }, h("label", { for: "order-cancel-reason" }, t("clinic.cancelReason")), reason),
        action: async () => {
          if (!reason.value.trim()) return t("clinic.cancelNeedReason");
          try {
            await apiPost(`/api/v1/orders/${encodeURIComponent(item.order_id)}/cancel`, { reason: reason.value.trim() }, { signal });
          } catch (err) {
            // 422 order_invalid: the reason is too long or holds characters that cannot be kept.
            if (err.status === 422 && err.errors.length) {
              return getLanguage() === "en" ? err.errors.map((e) => e.message).join(" ") : t("clinic.cancelReasonInvalid");
            }
            throw err;
          }
          note(t("clinic.cancelOk", d));
          load();
          return null;
        },
      });
    }

    function dueCell(item, stage) {
      if (!item.due_at) return "—";
      const minutes = minutesUntil(item.due_at);
      const overdue = OPEN_STAGES.has(stage) && minutes !== null && minutes < 0;
      return h(
        "span",
        { class: overdue ? "overdue" : null },
        formatDateTime(item.due_at),
        overdue ? h("span", { class: "overdue-badge" }, t("clinic.overdue", { n: -minutes })) : null,
      );
    }

    function studyRow(item, openCritical) {
      const uid = item.study_instance_uid || "";
      const stage = stageOf(item);
      const d = describe(item, types);
      const hasImages = Boolean(item.num_instances) && uid;
      const type = item.exam_type ? types.get(item.exam_type) : null;
      const modality = type ? examTypeDetail(type) : (item.modalities || "").split("\\").filter(Boolean).join(", ");
      const actions = reportButtons(item);
      const row = h("tr", {
        "data-testid": "clinic-study-row",
        "data-study-uid": uid,
        "data-status": stage,
        dataset: { uid, orderId: item.order_id ? String(item.order_id) : "", accession: item.accession_number || "" },
        class: [item.priority === "stat" ? "row-stat" : null, item.priority === "urgent" ? "row-urgent" : null],
      });
      if (item.critical) {
        actions.unshift(h("span", { class: "chip critical-chip" }, t("clinic.critical", { category: item.critical_category })));
        if (!item.acknowledged) {
          row.classList.add("critical-open");
          openCritical.push({ item, d });
          actions.push(
            h("button", { type: "button", class: "small danger", "data-testid": "critical-acknowledge", on: { click: () => acknowledge(item) } }, t("clinic.acknowledge")),
          );
        } else {
          actions.push(h("span", { class: "muted clinic-acked" }, t("clinic.acknowledged", { time: formatDateTime(item.acknowledged_at) })));
        }
      }
      const done = Boolean(item.done_at) || doneHere.has(item.order_id) || doneIds.has(item.order_id);
      const writer = can("order.write");
      // "Exam done" tells the gateway a machine without MPPS has finished: before the images
      // come (ordered, scanning) and while they arrive (receiving: the study completes then).
      if (writer && item.order_id && DONE_STAGES.has(stage) && !done) {
        actions.push(h("button", { type: "button", class: "small", "data-testid": "order-done", on: { click: () => examDone(item) } }, t("clinic.done")));
      }
      if (writer && item.order_id && stage === "ordered") {
        actions.push(h("button", { type: "button", class: "small", "data-testid": "order-cancel", on: { click: () => cancelOrder(item) } }, t("clinic.cancel")));
      }
      const name = formatPersonName(item.patient_name) || "—";
      const patient = [
        hasImages
          ? h("a", { class: "patient-link", href: `#/study/${encodeURIComponent(uid)}`, title: item.patient_name || "" }, name)
          : h("span", { class: "patient-name", title: item.patient_name || "" }, name),
        h("span", { class: "cell-sub muted" }, [item.patient_id, formatSexAge(item.patient_sex, item.patient_birth_date, item.study_date)].filter(Boolean).join(" · ")),
      ];
      const exam = [
        h("span", { class: "exam-name" }, d.exam),
        modality ? h("span", { class: "cell-sub muted" }, modality) : null,
        item.reason_for_procedure ? h("span", { class: "cell-sub clinic-question" }, t("clinic.question", { text: item.reason_for_procedure })) : null,
        // Signing adds the report's PDF and SR objects to the study: the count is shown until then.
        hasImages && !item.report_id ? h("span", { class: "cell-sub muted" }, t("clinic.images", { n: item.num_instances })) : null,
      ];
      const stageCell = [
        h("span", { class: ["chip", "stage", `stage-${stage}`], "data-testid": "clinic-stage" }, stageLabel(stage)),
        item.status_reason ? h("span", { class: "cell-sub muted stage-reason" }, item.status_reason) : null,
      ];
      const cells = [
        ["patient", patient],
        ["exam", exam],
        [
          "accession",
          [
            h("span", { class: "accession" }, item.accession_number || "—"),
            // An order without images yet: when it is scheduled on the machine.
            !item.received_at && item.scheduled_at ? h("span", { class: "cell-sub muted" }, t("clinic.scheduled", { time: formatDateTime(item.scheduled_at) })) : null,
          ],
        ],
        ["priority", item.priority ? h("span", { class: ["chip", `priority-${item.priority}`] }, priorityLabel(item.priority)) : "—"],
        ["due", dueCell(item, stage)],
        ["status", stageCell],
        ["radiologist", item.radiologist || "—"],
        ["report", h("div", { class: "clinic-report-cell" }, actions)],
      ];
      for (const [key, content] of cells) row.appendChild(h("td", { class: `col-${key}` }, content));
      return row;
    }

    function showCritical(open) {
      if (!open.length) {
        replaceChildren(critical);
        return;
      }
      replaceChildren(
        critical,
        h(
          "div",
          { class: "message message-error clinic-critical-banner", role: "alert" },
          h("p", { class: "clinic-critical-title" }, t("clinic.criticalOpen", { n: open.length })),
          h(
            "ul",
            { class: "clinic-critical-list" },
            open.map(({ item, d }) =>
              h(
                "li",
                { dataset: { studyUid: item.study_instance_uid } },
                h("span", {}, t("clinic.criticalItem", { ...d, category: item.critical_category })),
                h("button", { type: "button", class: "small", on: { click: () => acknowledge(item) } }, t("clinic.acknowledge")),
              ),
            ),
          ),
        ),
      );
    }

    const headers = [
      ["patient", "clinic.col.patient"],
      ["exam", "clinic.col.exam"],
      ["accession", "clinic.col.accession"],
      ["priority", "clinic.col.priority"],
      ["due", "clinic.col.due"],
      ["status", "clinic.col.status"],
      ["radiologist", "clinic.col.radiologist"],
      ["report", "clinic.col.report"],
    ];

    /**
     * Ids of the page's orders already marked "exam done" that are still scanning or receiving,
     * for rows that do not say so themselves (no `done_at`): one request, and only when the
     * page has such rows (GET /api/v1/orders?status=completed of the last 8 days).
     */
    async function doneOrders(list) {
      const unsure = list.filter((item) => item.order_id && !("done_at" in item) && ["scanning", "receiving"].includes(stageOf(item)));
      if (!unsure.length) return new Set();
      try {
        const since = new Date(Date.now() - 8 * 86400000).toISOString();
        const orders = await apiGet("/api/v1/orders", { status: "completed", scheduled_from: since, limit: 1000 }, { signal });
        return new Set((orders || []).filter((o) => o.done_at).map((o) => o.id));
      } catch (err) {
        if (err.name === "AbortError") throw err;
        return new Set(); // the button stays; the hub refuses a second "done" with its reason
      }
    }

    let doneIds = new Set();
    let seq = 0; // the latest load wins (a refresh and an action's reload may overlap)
    async function load() {
      setQuery({ patient: search.trim(), offset: offset || undefined });
      loading = true;
      wrap.setAttribute("aria-busy", "true"); // the list is being replaced (screen readers wait)
      const mine = ++seq;
      try {
        const [page, catalogue] = await Promise.all([
          apiGet("/api/v1/clinic/studies", clinicQuery(search, offset), { signal }),
          loadExamTypes({ signal }).catch(() => []),
        ]);
        if (mine !== seq) return;
        types = new Map(catalogue.map((x) => [x.code, x]));
        const list = (page && page.items) || [];
        doneIds = await doneOrders(list);
        if (mine !== seq) return;
        if (status.querySelector(".message-error")) replaceChildren(status);
        const openCritical = [];
        const table = h(
          "table",
          { class: "worklist clinic-table", id: "clinic-studies" },
          h("thead", {}, h("tr", {}, headers.map(([key, label]) => h("th", { scope: "col", class: `col-${key}` }, t(label))))),
          h("tbody", {}, list.map((item) => studyRow(item, openCritical))),
        );
        showCritical(openCritical);
        replaceChildren(wrap, table, list.length ? null : h("p", { class: "empty" }, t(search.trim() ? "clinic.emptySearch" : "clinic.empty")));
        replaceChildren(updated, t("clinic.updated", { time: formatDateTime(new Date()) }));
        replaceChildren(
          pager,
          h("button", { type: "button", id: "clinic-prev", disabled: offset === 0, on: { click: () => { offset = Math.max(0, offset - PAGE); load(); } } }, t("common.prev")),
          h("span", { class: "page-number" }, t("common.page", { n: Math.floor(offset / PAGE) + 1 })),
          h("button", { type: "button", id: "clinic-next", disabled: list.length < PAGE, on: { click: () => { offset += PAGE; load(); } } }, t("common.next")),
        );
      } catch (err) {
        if (mine === seq) fail(err);
      } finally {
        if (mine === seq) {
          loading = false;
          wrap.removeAttribute("aria-busy");
        }
      }
    }

    root.appendChild(
      h(
        "section",
        { class: "clinic-page", lang: getLanguage() },
        h("div", { class: "clinic-head" }, h("h1", {}, t("clinic.heading", { institution: user.institution_name })), newButton),
        critical,
        formSlot,
        h("p", { class: "clinic-intro muted", id: "clinic-intro" }, t("clinic.intro")),
        h(
          "form",
          { class: "filters", role: "search", on: { submit: (e) => e.preventDefault() } },
          h("div", { class: "field field-wide" }, h("label", { for: "clinic-search" }, t("clinic.search")), input),
          h("div", { class: "field field-buttons" }, updated, h("button", { type: "button", id: "clinic-refresh", on: { click: () => load() } }, t("clinic.refresh"))),
        ),
        status,
        wrap,
        pager,
      ),
    );
    // Only those the hub lets register orders see the form (clinic staff).
    newButton.hidden = !can("order.write");
    if (formOpen && can("order.write")) openForm(false);
    load();
    // Auto refresh: the list only (the form and open dialogs are elsewhere in the DOM).
    const timer = setInterval(() => {
      if (!loading && document.visibilityState === "visible") load();
    }, REFRESH_MS);
    return () => {
      clearTimeout(debounce);
      clearInterval(timer);
      for (const id of ["critical-ack", "order-done", "order-cancel"]) document.getElementById(id)?.remove();
    };
  },
});
