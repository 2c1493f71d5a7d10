// The clinic portal's "new exam order" form (pages/clinic.js opens it with `order-new`):
// patient (name in Chinese, optional pinyin, ID, sex, birth date), exam type from the hub's
// catalogue (GET /api/v1/exam-types, shown with its modality and body part), priority and the
// clinical question; `order-submit` sends POST /api/v1/orders. The hub is the one judge of the
// input: a 422 answer lists `errors: [{field, message}]` and each message is shown beside its
// field — in Chinese a fixed hint per field (the hub's message is English prose), in English the
// hub's message. After success the accession number is shown large, for the technician to pick
// the exam on the machine's worklist.
//
// What has been typed survives the page's re-renders (language switch, leaving and coming back)
// in this module's memory only — never in localStorage (patient data) — and is dropped once the
// order is registered.

import { addStrings, getLanguage, hasString, t } from "../i18n.js";
import { apiGet, apiPost } from "../api.js";
import { h, messageBox, replaceChildren } from "../dom.js";
import { bodyPartName, priorityLabel } from "../format.js";
import { onUserChange } from "../router.js";

addStrings({
  "zh-CN": {
    "order.new": "新建检查申请",
    "order.title": "新建检查申请",
    "order.close": "收起",
    "order.patient": "患者",
    "order.exam": "检查",
    "order.patientName": "患者姓名（中文）",
    "order.patientNameHint": "例如 王小东",
    "order.patientNamePinyin": "姓名拼音（可选）",
    "order.patientNamePinyinHint": "例如 Wang^Xiaodong",
    "order.patientId": "患者 ID",
    "order.sex": "性别",
    "order.sexNone": "请选择",
    "order.birthDate": "出生日期",
    "order.examType": "检查项目",
    "order.examTypeNone": "请选择检查项目",
    "order.examTypeLoading": "正在加载检查项目…",
    "order.priority": "优先级",
    "order.reason": "临床问题（检查目的）",
    "order.reasonHint": "例如：咳嗽两周，排除肺炎",
    "order.submit": "提交申请",
    "order.submitting": "正在提交…",
    "order.reset": "清空",
    "order.invalid": "申请未提交：请修改标红的项目。",
    "order.created": "检查申请已登记",
    "order.accession": "检查号",
    "order.accessionHint": "请在检查设备的工作列表中选择此检查号对应的检查。",
    "order.createdFor": "{patient} · {exam}",
    "order.another": "再建一个申请",
    "order.field.patient_name": "请填写患者的中文姓名（不超过 64 个字）。",
    "order.field.patient_name_pinyin": "拼音只能包含字母、空格和 ^（例如 Wang^Xiaodong）。",
    "order.field.patient_id": "请填写患者 ID（不超过 64 个字符，不含反斜杠）。",
    "order.field.patient_sex": "请选择性别。",
    "order.field.patient_birth_date": "请填写有效的出生日期（不能晚于今天）。",
    "order.field.exam_type": "请从列表中选择检查项目。",
    "order.field.priority": "请选择优先级。",
    "order.field.reason_for_procedure": "请填写临床问题（不超过 64 个字）。",
    "order.field.scheduled_at": "预约时间无效。",
    "order.field.scheduled_station_ae_title": "检查设备名称无效。",
    "order.field.other": "输入有误：{message}",
    "order.label.patient_name": "患者姓名",
    "order.label.patient_name_pinyin": "姓名拼音",
    "order.label.patient_id": "患者 ID",
    "order.label.patient_sex": "性别",
    "order.label.patient_birth_date": "出生日期",
    "order.label.exam_type": "检查项目",
    "order.label.priority": "优先级",
    "order.label.reason_for_procedure": "临床问题",
    "order.err.required": "请填写{label}。",
    "order.err.too_long": "{label}过长。",
    "order.err.invalid_characters": "{label}含有不允许的字符（如反斜杠）。",
    "order.err.invalid": "{label}无效。",
    "order.err.future": "{label}不能晚于今天。",
    "order.err.unknown": "{label}不在目录中，请从列表中选择。",
    "order.err.mismatch": "与所选检查项目不符。",
    "order.err.duplicate": "此检查号已被使用。",
    "order.err.patient_sex.required": "请选择性别。",
    "order.err.exam_type.required": "请从列表中选择检查项目。",
    "order.err.patient_name_pinyin.invalid_characters": "拼音只能包含字母、空格、撇号、连字符和 ^（例如 Wang^Xiaodong）。",
    "order.err.patient_birth_date.invalid": "请填写有效的出生日期。",
    "order.err.patient_birth_date.future": "出生日期不能晚于今天。",
  },
  en: {
    "order.new": "New exam order",
    "order.title": "New exam order",
    "order.close": "Close",
    "order.patient": "Patient",
    "order.exam": "Exam",
    "order.patientName": "Patient name (Chinese)",
    "order.patientNameHint": "e.g. 王小东",
    "order.patientNamePinyin": "Name in pinyin (optional)",
    "order.patientNamePinyinHint": "e.g. Wang^Xiaodong",
    "order.patientId": "Patient ID",
    "order.sex": "Sex",
    "order.sexNone": "Choose",
    "order.birthDate": "Birth date",
    "order.examType": "Exam type",
    "order.examTypeNone": "Choose an exam type",
    "order.examTypeLoading": "Loading exam types…",
    "order.priority": "Priority",
    "order.reason": "Clinical question",
    "order.reasonHint": "e.g. cough for two weeks, pneumonia?",
    "order.submit": "Submit order",
    "order.submitting": "Submitting…",
    "order.reset": "Clear",
    "order.invalid": "The order was not registered: correct the fields marked in red.",
    "order.created": "Exam order registered",
    "order.accession": "Accession number",
    "order.accessionHint": "Pick the exam with this accession number on the machine's worklist.",
    "order.createdFor": "{patient} · {exam}",
    "order.another": "Another order",
    "order.field.patient_name": "Enter the patient's name in Chinese (at most 64 characters).",
    "order.field.patient_name_pinyin": "Pinyin: letters, spaces and ^ only (e.g. Wang^Xiaodong).",
    "order.field.patient_id": "Enter the patient ID (at most 64 characters, no backslash).",
    "order.field.patient_sex": "Choose the sex.",
    "order.field.patient_birth_date": "Enter a valid birth date (not in the future).",
    "order.field.exam_type": "Choose an exam type from the list.",
    "order.field.priority": "Choose the priority.",
    "order.field.reason_for_procedure": "Enter the clinical question (at most 64 characters).",
    "order.field.scheduled_at": "The scheduled time is not valid.",
    "order.field.scheduled_station_ae_title": "The station name is not valid.",
    "order.field.other": "Invalid input: {message}",
  },
});

const FIELDS = [
  "patient_name",
  "patient_name_pinyin",
  "patient_id",
  "patient_sex",
  "patient_birth_date",
  "exam_type",
  "priority",
  "reason_for_procedure",
];
const SEXES = ["M", "F", "O"];
const PRIORITIES = ["routine", "urgent", "stat"];

// What the user typed, kept over re-renders of the page (memory only); forgotten when the
// session ends or another user logs in, so no one sees the last user's patient.
let draft = {};
let draftOwner = null;
onUserChange((user) => {
  const who = user ? user.username : null;
  if (who !== draftOwner) {
    draft = {};
    draftOwner = who;
  }
});

/** The exam type catalogue as a list, whatever envelope the hub wraps it in. */
function catalogueItems(body) {
  if (Array.isArray(body)) return body;
  if (body && Array.isArray(body.exam_types)) return body.exam_types;
  if (body && Array.isArray(body.items)) return body.items;
  return [];
}

/** An exam type's name in the user's language. */
export function examTypeName(item) {
  if (!item) return "";
  const zh = getLanguage() === "zh-CN";
  if (item.names && typeof item.names === "object") {
    return (zh ? item.names["zh-CN"] || item.names.zh : item.names.en) || item.code;
  }
  return (zh ? item.name_zh || item.name : item.name_en || item.name) || item.name_zh || item.code || "";
}

/** "DX · 胸部" — an exam type's modality and body part (named in the user's language). */
export function examTypeDetail(item) {
  if (!item) return "";
  return [item.modality, bodyPartName(item.body_part || item.body_part_examined)].filter(Boolean).join(" · ");
}

let catalogue = null; // the promise of the catalogue, once per page load

/** GET /api/v1/exam-types once; a failure is retried by the next call. */
export function loadExamTypes({ signal } = {}) {
  if (!catalogue) {
    catalogue = apiGet("/api/v1/exam-types", undefined, { signal }).then(catalogueItems);
    catalogue.catch(() => {
      catalogue = null;
    });
  }
  return catalogue;
}

/** YYYY-MM-DD (a date input's value) → YYYYMMDD; anything else unchanged (the hub judges it). */
export function dicomDate(value) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value || "");
  return m ? `${m[1]}${m[2]}${m[3]}` : value || "";
}

/** The body of POST /api/v1/orders from the form's values. */
export function orderBody(values) {
  const body = {
    patient_name: (values.patient_name || "").trim(),
    patient_id: (values.patient_id || "").trim(),
    patient_sex: values.patient_sex || "",
    patient_birth_date: dicomDate(values.patient_birth_date),
    exam_type: values.exam_type || "",
    priority: values.priority || "routine",
    reason_for_procedure: (values.reason_for_procedure || "").trim(),
  };
  const pinyin = (values.patient_name_pinyin || "").trim();
  if (pinyin) body.patient_name_pinyin = pinyin;
  return body;
}

// Fields of POST /api/v1/orders that this form does not show, and the control they belong to:
// the exam type decides modality, body part and procedure description.
const FIELD_OF = {
  modality: "exam_type",
  body_part_examined: "exam_type",
  requested_procedure_description: "exam_type",
  requested_procedure_id: "exam_type",
};

/** The form control a 422 error entry belongs to ("body.patient_id" → "patient_id"). */
export function errorField(error) {
  const field = String((error && error.field) || "").split(".").pop();
  return FIELD_OF[field] || field;
}

/**
 * The message for one entry of a 422's `errors` ({field, code, message}) in the user's
 * language: English shows the hub's sentence; Chinese a text by field and code, else by code
 * with the field's name, else the field's general hint.
 */
export function fieldMessage(error) {
  const field = errorField(error);
  const code = String(error.code || "");
  if (getLanguage() === "en" && error.message) return String(error.message);
  if (code && hasString(`order.err.${field}.${code}`)) return t(`order.err.${field}.${code}`);
  if (code && FIELDS.includes(field) && hasString(`order.err.${code}`)) {
    return t(`order.err.${code}`, { label: t(`order.label.${field}`) });
  }
  if (hasString(`order.field.${field}`)) return t(`order.field.${field}`);
  return t("order.field.other", { message: String(error.message || error.field || "") });
}

/**
 * The order form panel. onCreated(order) runs after the hub registered an order; onClose() when
 * the user folds the form away. Returns { element, focus }.
 */
export function orderForm({ signal, onCreated, onClose }) {
  const controls = {};
  const errors = {};
  const remember = (name) => () => {
    draft[name] = controls[name].value;
  };

  function field(name, label, control, { wide = false, hint = null } = {}) {
    control.id = `order-${name.replaceAll("_", "-")}`;
    control.name = name;
    if (draft[name] !== undefined) control.value = draft[name];
    control.addEventListener("input", remember(name));
    control.addEventListener("change", remember(name));
    controls[name] = control;
    const errorId = `${control.id}-error`;
    control.setAttribute("aria-describedby", errorId);
    errors[name] = h("div", { class: "field-error", id: errorId, "data-field": name, "aria-live": "polite" });
    return h(
      "div",
      { class: ["field", "order-field", wide ? "order-field-wide" : null], dataset: { field: name } },
      h("label", { for: control.id }, t(label)),
      control,
      hint ? h("span", { class: "field-hint muted" }, hint) : null,
      errors[name],
    );
  }

  const examSelect = h("select", {}, h("option", { value: "" }, t("order.examTypeLoading")));
  const examDetail = h("span", { class: "order-exam-detail muted", id: "order-exam-detail" });
  let types = [];
  const showDetail = () => {
    const item = types.find((x) => x.code === examSelect.value);
    replaceChildren(examDetail, item ? examTypeDetail(item) : "");
  };
  examSelect.addEventListener("change", showDetail);

  const today = new Date();
  const iso = (d) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;

  const status = h("div", { class: "order-status", "aria-live": "assertive" });
  const submit = h("button", { type: "submit", class: "primary", id: "order-submit", "data-testid": "order-submit" }, t("order.submit"));
  const form = h(
    "form",
    { class: "order-form", id: "order-form", novalidate: true, autocomplete: "off" },
    h(
      "fieldset",
      { class: "order-group" },
      h("legend", {}, t("order.patient")),
      field("patient_name", "order.patientName", h("input", { type: "text", maxlength: "64", lang: "zh-CN", placeholder: t("order.patientNameHint") })),
      field(
        "patient_name_pinyin",
        "order.patientNamePinyin",
        h("input", { type: "text", maxlength: "64", lang: "en", placeholder: t("order.patientNamePinyinHint") }),
      ),
      field("patient_id", "order.patientId", h("input", { type: "text", maxlength: "64" })),
      field(
        "patient_sex",
        "order.sex",
        h("select", {}, h("option", { value: "" }, t("order.sexNone")), SEXES.map((s) => h("option", { value: s }, t(`sex.${s}`)))),
      ),
      field("patient_birth_date", "order.birthDate", h("input", { type: "date", max: iso(today), min: "1900-01-01" })),
    ),
    h(
      "fieldset",
      { class: "order-group" },
      h("legend", {}, t("order.exam")),
      h(
        "div",
        { class: "order-exam-row" },
        field("exam_type", "order.examType", examSelect, { wide: true }),
        examDetail,
      ),
      field(
        "priority",
        "order.priority",
        h("select", {}, PRIORITIES.map((p) => h("option", { value: p }, priorityLabel(p)))),
      ),
      field(
        "reason_for_procedure",
        "order.reason",
        h("textarea", { rows: "2", maxlength: "64", placeholder: t("order.reasonHint") }),
        { wide: true },
      ),
    ),
    status,
    h(
      "div",
      { class: "order-actions" },
      h("button", { type: "button", id: "order-reset", on: { click: () => reset() } }, t("order.reset")),
      h("button", { type: "button", id: "order-close", on: { click: () => onClose && onClose() } }, t("order.close")),
      submit,
    ),
  );
  const result = h("div", { class: "order-result", id: "order-result", "aria-live": "polite" });
  const element = h(
    "section",
    { class: "order-panel panel", id: "order-panel", "aria-labelledby": "order-title" },
    h("h2", { id: "order-title" }, t("order.title")),
    result,
    form,
  );

  function clearErrors() {
    for (const name of Object.keys(errors)) {
      replaceChildren(errors[name]);
      controls[name].removeAttribute("aria-invalid");
      controls[name].closest(".field").classList.remove("has-error");
    }
    replaceChildren(status);
  }

  function reset() {
    draft = {};
    form.reset();
    showDetail();
    clearErrors();
  }

  function showErrors(list) {
    let first = null;
    for (const error of list) {
      const name = errorField(error);
      const slot = errors[name];
      const text = fieldMessage(error);
      if (slot) {
        if (slot.textContent.includes(text)) continue;
        slot.appendChild(h("span", {}, text));
        controls[name].setAttribute("aria-invalid", "true");
        controls[name].closest(".field").classList.add("has-error");
        first = first || controls[name];
      } else {
        status.appendChild(messageBox("error", text));
      }
    }
    return first;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const values = Object.fromEntries(FIELDS.map((name) => [name, controls[name].value]));
    const body = orderBody(values);
    submit.disabled = true;
    submit.textContent = t("order.submitting");
    try {
      const order = await apiPost("/api/v1/orders", body, { signal });
      const type = types.find((x) => x.code === body.exam_type);
      reset();
      showResult(order, type);
      if (onCreated) onCreated(order);
    } catch (err) {
      if (err.name === "AbortError") return;
      const list = Array.isArray(err.errors) ? err.errors : [];
      if (err.status === 422 && list.length) {
        status.appendChild(messageBox("error", t("order.invalid")));
        const first = showErrors(list);
        if (first) first.focus();
      } else {
        status.appendChild(messageBox("error", err.message));
      }
    } finally {
      submit.disabled = false;
      submit.textContent = t("order.submit");
    }
  });

  function showResult(order, type) {
    replaceChildren(
      result,
      h(
        "div",
        { class: "order-created", role: "status", "data-testid": "order-created", dataset: { orderId: String(order.id) } },
        h("p", { class: "order-created-title" }, t("order.created")),
        h(
          "p",
          { class: "order-created-accession" },
          h("span", { class: "order-accession-label" }, t("order.accession")),
          h("strong", { class: "order-accession", id: "order-accession", "data-testid": "order-accession" }, order.accession_number),
        ),
        h(
          "p",
          { class: "order-created-for" },
          t("order.createdFor", {
            patient: order.patient_name ? order.patient_name.split("=").pop().replaceAll("^", "") : order.patient_id,
            exam: type ? examTypeName(type) : order.exam_type || order.requested_procedure_description || "",
          }),
        ),
        h("p", { class: "muted" }, t("order.accessionHint")),
        h(
          "button",
          { type: "button", id: "order-another", on: { click: () => { replaceChildren(result); controls.patient_name.focus(); } } },
          t("order.another"),
        ),
      ),
    );
  }

  loadExamTypes({ signal })
    .then((list) => {
      types = list;
      const keep = draft.exam_type || "";
      replaceChildren(
        examSelect,
        h("option", { value: "" }, t("order.examTypeNone")),
        list.map((item) =>
          h(
            "option",
            { value: item.code, dataset: { modality: item.modality || "", bodyPart: item.body_part || item.body_part_examined || "" } },
            getLanguage() === "zh-CN" ? `${examTypeName(item)}（${examTypeDetail(item)}）` : `${examTypeName(item)} (${examTypeDetail(item)})`,
          ),
        ),
      );
      examSelect.value = keep;
      showDetail();
    })
    .catch((err) => {
      if (err.name !== "AbortError") replaceChildren(status, messageBox("error", err.message));
    });

  return { element, focus: () => controls.patient_name.focus() };
}
