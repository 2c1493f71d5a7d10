// Clinic staff landing page (#/clinic): the clinic's own studies, newest first, from QIDO-RS
// (GET /dicomweb/studies, which the hub scopes to the caller's clinic), each linking to the
// study page. Reading status and signed reports are not available to clinic accounts yet: the
// page says so plainly.

import { addStrings, formatDicomDate, t } from "../i18n.js";
import { apiGet } from "../api.js";
import { h, messageBox, replaceChildren } from "../dom.js";
import { formatNumber, formatPersonName, formatSexAge } from "../format.js";
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
    "clinic.notYet":
      "这里列出已传到影像中心的本院检查（最新的在前）。阅片状态和报告下载将在卫生院门户的下一个版本中提供。",
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
    "clinic.notYet":
      "These are your clinic's studies that reached the hub (newest first). Reading status and report downloads come with the next release of the clinic portal.",
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

    async function load() {
      setQuery({ patient: search.trim(), offset: offset || undefined });
      try {
        const studies = await apiGet("/dicomweb/studies", clinicQuery(search, offset), {
          signal,
          headers: { Accept: "application/dicom+json" },
        });
        const list = Array.isArray(studies) ? studies : [];
        replaceChildren(status);
        const table = h(
          "table",
          { class: "worklist", id: "clinic-studies" },
          h("thead", {}, h("tr", {}, COLUMNS.map(([key, label]) => h("th", { scope: "col", class: `col-${key}` }, t(label))))),
          h(
            "tbody",
            {},
            list.map((s) => {
              const uid = first(s, TAG.StudyInstanceUID);
              return h("tr", { dataset: { uid } }, COLUMNS.map(([key, , cell]) => h("td", { class: `col-${key}` }, cell(s, uid))));
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
      } catch (err) {
        if (err.name !== "AbortError") replaceChildren(status, messageBox("error", err.message));
      }
    }

    root.appendChild(
      h(
        "section",
        { class: "clinic-page" },
        h("h1", {}, t("clinic.heading", { institution: user.institution_name })),
        h("p", { class: "message message-info", id: "clinic-not-yet" }, t("clinic.notYet")),
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
