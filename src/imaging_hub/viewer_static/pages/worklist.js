// Worklist page (#/worklist): GET /api/v1/worklist with filters, sorting and paging kept in the
// hash query, refreshed every 15 s while the tab is visible.

import { addStrings, formatDateTime, formatDicomDate, minutesUntil, t } from "../i18n.js";
import { apiGet, apiPost } from "../api.js";
import { clear, h, messageBox, replaceChildren } from "../dom.js";
import { bodyPartName, formatNumber, formatPersonName, formatSexAge, priorityLabel, statusLabel } from "../format.js";
import { can, navigate, registerRoute, setQuery } from "../router.js";
import { loadInstitutions } from "../institutions.js";

addStrings({
  "zh-CN": {
    "worklist.title": "工作列表",
    "worklist.filters": "筛选",
    "worklist.status": "状态",
    "worklist.priority": "优先级",
    "worklist.clinic": "卫生院",
    "worklist.modality": "检查类型",
    "worklist.patient": "患者姓名或 ID",
    "worklist.any": "全部",
    "worklist.open": "未完成",
    "worklist.clear": "清除筛选",
    "worklist.refresh": "刷新",
    "worklist.updated": "更新于 {time}",
    "worklist.empty": "没有符合条件的检查。",
    "worklist.col.patient": "患者姓名",
    "worklist.col.patientId": "患者 ID",
    "worklist.col.sexAge": "性别/年龄",
    "worklist.col.modality": "类型",
    "worklist.col.bodyPart": "部位",
    "worklist.col.studyDate": "检查日期",
    "worklist.col.clinic": "卫生院",
    "worklist.col.images": "图像",
    "worklist.col.priority": "优先级",
    "worklist.col.status": "状态",
    "worklist.col.received": "接收时间",
    "worklist.col.due": "截止时间",
    "worklist.col.assigned": "阅片医生",
    "worklist.overdue": "已超时 {n} 分钟",
    "worklist.dueIn": "剩余 {n} 分钟",
    "worklist.page": "第 {n} 页",
    "worklist.prev": "上一页",
    "worklist.next": "下一页",
    "worklist.pageSize": "每页",
    "worklist.images": "{series} 序列 / {images} 图像",
    "worklist.sortBy": "按此列排序",
    "worklist.col.actions": "操作",
    "worklist.nextStudy": "领取下一个检查",
    "worklist.claim": "领取",
    "worklist.release": "释放",
    "worklist.claimed": "已领取：{patient}",
    "worklist.released": "已释放：{patient}",
    "worklist.nothingToClaim": "目前没有您可以领取的检查。",
    "worklist.mine": "我的",
    "worklist.admin.reassignTo": "改派给",
    "worklist.admin.reassign": "改派",
    "worklist.admin.priority": "更改优先级",
    "worklist.admin.reassigned": "已将 {patient} 改派给 {name}。",
    "worklist.admin.priorityChanged": "{patient} 的优先级已改为 {priority}。",
  },
  en: {
    "worklist.title": "Worklist",
    "worklist.filters": "Filters",
    "worklist.status": "Status",
    "worklist.priority": "Priority",
    "worklist.clinic": "Clinic",
    "worklist.modality": "Modality",
    "worklist.patient": "Patient name or ID",
    "worklist.any": "All",
    "worklist.open": "Open",
    "worklist.clear": "Clear filters",
    "worklist.refresh": "Refresh",
    "worklist.updated": "Updated {time}",
    "worklist.empty": "No studies match these filters.",
    "worklist.col.patient": "Patient name",
    "worklist.col.patientId": "Patient ID",
    "worklist.col.sexAge": "Sex/age",
    "worklist.col.modality": "Modality",
    "worklist.col.bodyPart": "Body part",
    "worklist.col.studyDate": "Study date",
    "worklist.col.clinic": "Clinic",
    "worklist.col.images": "Images",
    "worklist.col.priority": "Priority",
    "worklist.col.status": "Status",
    "worklist.col.received": "Received",
    "worklist.col.due": "Due",
    "worklist.col.assigned": "Assigned to",
    "worklist.overdue": "Overdue by {n} min",
    "worklist.dueIn": "{n} min left",
    "worklist.page": "Page {n}",
    "worklist.prev": "Previous",
    "worklist.next": "Next",
    "worklist.pageSize": "Per page",
    "worklist.images": "{series} series / {images} images",
    "worklist.sortBy": "Sort by this column",
    "worklist.col.actions": "Actions",
    "worklist.nextStudy": "Take next study",
    "worklist.claim": "Claim",
    "worklist.release": "Release",
    "worklist.claimed": "Claimed: {patient}",
    "worklist.released": "Released: {patient}",
    "worklist.nothingToClaim": "There is no study for you to claim right now.",
    "worklist.mine": "Mine",
    "worklist.admin.reassignTo": "Reassign to",
    "worklist.admin.reassign": "Reassign",
    "worklist.admin.priority": "Change priority",
    "worklist.admin.reassigned": "{patient} reassigned to {name}.",
    "worklist.admin.priorityChanged": "Priority of {patient} changed to {priority}.",
  },
});

export const REFRESH_MS = 15000;
const STATUSES = ["receiving", "unread", "in_progress", "escalated", "signed", "delivered", "acknowledged", "cancelled"];
const OPEN = ["unread", "in_progress", "escalated"];
const PRIORITIES = ["stat", "urgent", "routine"];
const MODALITIES = ["CR", "DX", "CT", "MR", "US", "MG", "XA", "RF", "NM", "PT", "ES", "OT"];
const PAGE_SIZES = [25, 50, 100, 200];
const ACTIVE = new Set(["receiving", "unread", "in_progress", "escalated"]);

// Columns: key, i18n label, API sort key (or null), cell builder.
const COLUMNS = [
  ["patient", "worklist.col.patient", "patient_name", patientCell],
  ["patientId", "worklist.col.patientId", null, (i) => h("span", { title: i.patient_id }, i.patient_id)],
  ["sexAge", "worklist.col.sexAge", null, (i) =>
    formatSexAge(i.patient_sex, i.patient_birth_date, i.study_date)],
  ["modality", "worklist.col.modality", null, (i) => i.modalities],
  ["bodyPart", "worklist.col.bodyPart", null, (i) =>
    h("span", { title: i.body_part_examined || "", "data-code": i.body_part_examined || "" }, bodyPartName(i.body_part_examined))],
  ["studyDate", "worklist.col.studyDate", "study_date", (i) => formatDicomDate(i.study_date)],
  ["clinic", "worklist.col.clinic", "clinic", (i) =>
    h("span", { title: i.clinic_name ? `${i.clinic_name} (${i.clinic})` : i.clinic, "data-code": i.clinic }, i.clinic_name || i.clinic)],
  ["images", "worklist.col.images", null, (i) =>
    h("span", { title: t("worklist.images", { series: i.num_series, images: i.num_instances }) },
      formatNumber(i.num_instances))],
  ["priority", "worklist.col.priority", "priority", (i) =>
    h("span", { class: ["chip", `priority-${i.priority}`] }, priorityLabel(i.priority))],
  ["status", "worklist.col.status", null, (i) =>
    h("span", { class: ["chip", `status-${i.status}`] }, statusLabel(i.status))],
  ["received", "worklist.col.received", "received_at", (i) => formatDateTime(i.received_at)],
  ["due", "worklist.col.due", "due_at", dueCell],
  ["assigned", "worklist.col.assigned", null, (i) => i.assigned_to || ""],
];

function patientCell(item) {
  return h(
    "a",
    {
      href: `#/study/${encodeURIComponent(item.study_instance_uid)}`,
      class: "patient-link",
      title: item.patient_name,
    },
    formatPersonName(item.patient_name) || "—",
  );
}

function dueCell(item) {
  if (!item.due_at) return "";
  const minutes = minutesUntil(item.due_at);
  const overdue = item.overdue || (minutes !== null && minutes < 0 && ACTIVE.has(item.status));
  const hint = overdue
    ? t("worklist.overdue", { n: -minutes })
    : ACTIVE.has(item.status) && minutes !== null
      ? t("worklist.dueIn", { n: minutes })
      : "";
  return h(
    "span",
    { class: overdue ? "overdue" : null, title: hint || null },
    formatDateTime(item.due_at),
    overdue && minutes < 0 ? h("span", { class: "overdue-badge" }, t("worklist.overdue", { n: -minutes })) : null,
  );
}

/** Filter state from the hash query (tolerant: unknown values are dropped). */
export function stateFromQuery(query) {
  const pick = (value, allowed, fallback) => (allowed.includes(value) ? value : fallback);
  const limit = Number(query.get("limit"));
  const offset = Number(query.get("offset"));
  return {
    status: pick(query.get("status"), ["open", "", ...STATUSES], "open"),
    priority: pick(query.get("priority"), PRIORITIES, ""),
    clinic: /^[a-z0-9-]{1,63}$/.test(query.get("clinic") || "") ? query.get("clinic") : "",
    modality: pick(query.get("modality"), MODALITIES, ""),
    patient: (query.get("patient") || "").slice(0, 64),
    sort: pick(query.get("sort"), COLUMNS.map((c) => c[2]).filter(Boolean), "priority"),
    descending: query.get("descending") === "true",
    limit: PAGE_SIZES.includes(limit) ? limit : 50,
    offset: Number.isInteger(offset) && offset > 0 ? offset : 0,
  };
}

/** Query parameters for GET /api/v1/worklist. */
export function apiParams(state) {
  return {
    status: state.status === "open" ? OPEN : state.status || undefined,
    priority: state.priority || undefined,
    clinic: state.clinic || undefined,
    modality: state.modality || undefined,
    patient: state.patient.trim() || undefined,
    sort: state.sort,
    descending: state.descending ? "true" : undefined,
    limit: state.limit,
    offset: state.offset || undefined,
  };
}

function select(id, label, value, options, onChange) {
  const el = h(
    "select",
    { id, name: id },
    options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)),
  );
  el.addEventListener("change", () => onChange(el.value));
  return h("div", { class: "field" }, h("label", { for: id }, label), el);
}

function renderWorklist({ root, query, signal, user }) {
  const state = stateFromQuery(query);
  const claims = can("study.claim", user);
  const assigns = can("study.assign", user);
  const prioritizes = can("study.prioritize", user);
  const baseColumns = COLUMNS.map((c) =>
    c[0] === "assigned" ? ["assigned", c[1], null, (i) => assignedCell(i)] : c);
  const columns = claims || assigns
    ? [...baseColumns, ["actions", "worklist.col.actions", null, (i) => (assigns ? adminCell(i) : actionsCell(i))]]
    : baseColumns;
  let radiologists = []; // admins: active radiologists for reassignment
  let institutions = new Map();
  const nameOf = (username) => {
    const found = radiologists.find((r) => r.username === username);
    return found && found.display_name ? found.display_name : username;
  };

  function assignedCell(item) {
    if (!item.assigned_to) return "";
    return h("span", { class: "assigned-name", title: item.assigned_to, "data-username": item.assigned_to }, nameOf(item.assigned_to));
  }

  // Administrators: change the priority (any open study) and reassign (unread or claimed) to an
  // active radiologist; the hub checks eligibility and answers 409 with a code otherwise.
  function adminCell(item) {
    const uid = encodeURIComponent(item.study_instance_uid);
    const patient = formatPersonName(item.patient_name);
    const parts = [];
    if (prioritizes && (item.status === "receiving" || OPEN.includes(item.status))) {
      const prio = h(
        "select",
        { class: "row-select", "data-testid": "worklist-priority", "aria-label": t("worklist.admin.priority"), title: t("worklist.admin.priority") },
        PRIORITIES.map((p) => h("option", { value: p, selected: p === item.priority }, priorityLabel(p))),
      );
      prio.addEventListener("change", () =>
        adminAct(
          () => apiPost(`/api/v1/studies/${uid}/priority`, { priority: prio.value }, { signal }),
          t("worklist.admin.priorityChanged", { patient, priority: priorityLabel(prio.value) }),
        ));
      parts.push(prio);
    }
    if (item.status === "unread" || item.status === "in_progress") {
      const choices = radiologists.filter((r) => r.username !== item.assigned_to);
      const to = h(
        "select",
        { class: "row-select", "data-testid": "worklist-reassign-to", "aria-label": t("worklist.admin.reassignTo"), title: t("worklist.admin.reassignTo") },
        choices.map((r) => h("option", { value: r.username, title: r.username }, r.display_name || r.username)),
      );
      const go = h("button", {
        type: "button",
        class: "row-action",
        "data-testid": "worklist-reassign",
        disabled: choices.length === 0,
        on: {
          click: () =>
            adminAct(
              () => apiPost(`/api/v1/studies/${uid}/assign`, { username: to.value }, { signal }),
              t("worklist.admin.reassigned", { patient, name: nameOf(to.value) }),
            ),
        },
      }, t("worklist.admin.reassign"));
      parts.push(h("span", { class: "reassign" }, to, go));
    }
    return h("span", { class: "row-actions" }, parts);
  }

  async function adminAct(fn, message) {
    try {
      await fn();
      replaceChildren(notice, messageBox("ok", message));
    } catch (err) {
      if (err.name === "AbortError") return;
      const box = messageBox("error", err.message);
      if (err.code) box.dataset.code = err.code;
      replaceChildren(notice, box);
    }
    load();
  }
  const notice = h("div", { class: "worklist-notice", id: "worklist-notice", "aria-live": "polite" });

  function actionsCell(item) {
    if (item.status === "unread") {
      return h("button", { type: "button", class: "row-action", dataset: { action: "claim" }, on: { click: () => act(item, "claim") } }, t("worklist.claim"));
    }
    if (item.status === "in_progress" && item.assigned_to === user.username) {
      return h("button", { type: "button", class: "row-action", dataset: { action: "release" }, on: { click: () => act(item, "release") } }, t("worklist.release"));
    }
    return "";
  }

  async function act(item, action) {
    try {
      await apiPost(`/api/v1/studies/${encodeURIComponent(item.study_instance_uid)}/${action}`, undefined, { signal });
      const patient = formatPersonName(item.patient_name);
      replaceChildren(notice, messageBox("ok", t(action === "claim" ? "worklist.claimed" : "worklist.released", { patient })));
    } catch (err) {
      if (err.name === "AbortError") return;
      replaceChildren(notice, messageBox("error", err.message));
    }
    load();
  }

  async function takeNext() {
    try {
      const item = await apiPost("/api/v1/worklist/next", undefined, { signal });
      if (!item) {
        replaceChildren(notice, messageBox("info", t("worklist.nothingToClaim")));
      } else {
        navigate(`/study/${encodeURIComponent(item.study_instance_uid)}`);
        return;
      }
    } catch (err) {
      if (err.name === "AbortError") return;
      replaceChildren(notice, messageBox("error", err.message));
    }
    load();
  }
  let timer = null;
  let inFlight = null;
  let clinicsSeen = new Set();

  const status = h("div", { class: "worklist-status", "aria-live": "polite" });
  const updated = h("span", { class: "updated", id: "worklist-updated" });
  const tableWrap = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  const clinicList = h("datalist", { id: "worklist-clinics" });

  function changed(patch) {
    Object.assign(state, patch);
    if (!("offset" in patch)) state.offset = 0;
    setQuery({
      status: state.status === "open" ? undefined : state.status || "all",
      priority: state.priority,
      clinic: state.clinic,
      modality: state.modality,
      patient: state.patient,
      sort: state.sort === "priority" ? undefined : state.sort,
      descending: state.descending ? "true" : undefined,
      limit: state.limit === 50 ? undefined : state.limit,
      offset: state.offset || undefined,
    });
    load();
  }

  const clinicInput = h("input", {
    id: "filter-clinic",
    name: "clinic",
    value: state.clinic,
    list: "worklist-clinics",
    autocomplete: "off",
    spellcheck: "false",
    pattern: "[a-z0-9-]+",
    maxlength: "63",
  });
  clinicInput.addEventListener("change", () => {
    const value = clinicInput.value.trim().toLowerCase();
    clinicInput.value = value;
    if (value === "" || /^[a-z0-9-]{1,63}$/.test(value)) changed({ clinic: value });
  });

  const patientInput = h("input", {
    id: "filter-patient",
    name: "patient",
    type: "search",
    value: state.patient,
    maxlength: "64",
    autocomplete: "off",
  });
  let debounce = null;
  patientInput.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => changed({ patient: patientInput.value }), 300);
  });

  const statusValue = query.get("status") === "all" ? "" : state.status;
  state.status = statusValue;
  const filters = h(
    "form",
    { class: "filters", id: "worklist-filters", role: "search", "aria-label": t("worklist.filters") },
    select(
      "filter-status",
      t("worklist.status"),
      state.status,
      [["open", t("worklist.open")], ["", t("worklist.any")], ...STATUSES.map((s) => [s, statusLabel(s)])],
      (v) => changed({ status: v }),
    ),
    select(
      "filter-priority",
      t("worklist.priority"),
      state.priority,
      [["", t("worklist.any")], ...PRIORITIES.map((p) => [p, priorityLabel(p)])],
      (v) => changed({ priority: v }),
    ),
    h("div", { class: "field" }, h("label", { for: "filter-clinic" }, t("worklist.clinic")), clinicInput, clinicList),
    select(
      "filter-modality",
      t("worklist.modality"),
      state.modality,
      [["", t("worklist.any")], ...MODALITIES.map((m) => [m, m])],
      (v) => changed({ modality: v }),
    ),
    h("div", { class: "field field-wide" }, h("label", { for: "filter-patient" }, t("worklist.patient")), patientInput),
    h("div", { class: "field field-buttons" },
      h("button", {
        type: "button",
        id: "filter-clear",
        on: {
          click: () => {
            patientInput.value = "";
            clinicInput.value = "";
            for (const id of ["filter-status", "filter-priority", "filter-modality"]) {
              filters.querySelector(`#${id}`).value = id === "filter-status" ? "open" : "";
            }
            changed({ status: "open", priority: "", clinic: "", modality: "", patient: "" });
          },
        },
      }, t("worklist.clear")),
      h("button", { type: "button", id: "worklist-refresh", on: { click: () => load() } }, t("worklist.refresh")),
    ),
  );
  filters.addEventListener("submit", (e) => e.preventDefault());

  function headerCell([key, label, sortKey]) {
    if (!sortKey) return h("th", { scope: "col", class: `col-${key}` }, t(label));
    const sorted = state.sort === sortKey;
    const button = h(
      "button",
      {
        type: "button",
        class: "sort",
        dataset: { sort: sortKey },
        title: t("worklist.sortBy"),
        on: {
          click: () => changed({ sort: sortKey, descending: sorted ? !state.descending : false }),
        },
      },
      t(label),
      sorted ? h("span", { class: "sort-mark", "aria-hidden": "true" }, state.descending ? " ▼" : " ▲") : null,
    );
    return h(
      "th",
      {
        scope: "col",
        class: `col-${key}`,
        "aria-sort": sorted ? (state.descending ? "descending" : "ascending") : null,
      },
      button,
    );
  }

  function renderTable(items) {
    for (const i of items) clinicsSeen.add(i.clinic);
    for (const inst of institutions.values()) {
      if (inst.level === "township" || inst.level === "village") clinicsSeen.add(inst.code);
    }
    replaceChildren(clinicList, [...clinicsSeen].sort().map((c) => h("option", { value: c, label: (institutions.get(c) || {}).name || c })));
    const head = h("thead", {}, h("tr", {}, columns.map(headerCell)));
    const body = h(
      "tbody",
      {},
      items.map((item) => {
        const minutes = minutesUntil(item.due_at);
        const overdue = item.overdue || (minutes !== null && minutes < 0 && ACTIVE.has(item.status));
        return h(
          "tr",
          {
            class: [
              `row-${item.priority}`,
              overdue ? "row-overdue" : null,
            ],
            "data-testid": "worklist-row",
            dataset: { uid: item.study_instance_uid, studyUid: item.study_instance_uid },
          },
          columns.map(([key, , , cell]) => h("td", { class: `col-${key}` }, cell(item))),
        );
      }),
    );
    const table = h("table", { class: "worklist", id: "worklist-table" }, head, body);
    replaceChildren(tableWrap, table);
    if (items.length === 0) tableWrap.appendChild(h("p", { class: "empty", id: "worklist-empty" }, t("worklist.empty")));
    const page = Math.floor(state.offset / state.limit) + 1;
    replaceChildren(
      pager,
      h("button", {
        type: "button",
        id: "page-prev",
        disabled: state.offset === 0,
        on: { click: () => changed({ offset: Math.max(0, state.offset - state.limit) }) },
      }, t("worklist.prev")),
      h("span", { class: "page-number", id: "page-number" }, t("worklist.page", { n: page })),
      h("button", {
        type: "button",
        id: "page-next",
        disabled: items.length < state.limit,
        on: { click: () => changed({ offset: state.offset + state.limit }) },
      }, t("worklist.next")),
      select(
        "page-size",
        t("worklist.pageSize"),
        String(state.limit),
        PAGE_SIZES.map((n) => [String(n), String(n)]),
        (v) => changed({ limit: Number(v) }),
      ),
    );
  }

  async function load() {
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    const onLeave = () => controller.abort();
    signal.addEventListener("abort", onLeave, { once: true });
    try {
      const data = await apiGet("/api/v1/worklist", apiParams(state), { signal: controller.signal });
      if (controller.signal.aborted) return;
      clear(status);
      renderTable(data.items);
      updated.textContent = t("worklist.updated", { time: formatDateTime(new Date()) });
    } catch (err) {
      if (err.name === "AbortError") return;
      replaceChildren(status, messageBox("error", err.message));
    } finally {
      signal.removeEventListener("abort", onLeave);
      if (inFlight === controller) inFlight = null;
    }
  }

  function tick() {
    // An administrator choosing a radiologist or a priority in a row keeps the row as it is.
    const focused = document.activeElement;
    if (focused && focused.tagName === "SELECT" && tableWrap.contains(focused)) return;
    if (document.visibilityState === "visible" && !inFlight) load();
  }

  const lookups = [
    loadInstitutions().then((m) => { institutions = m; }).catch(() => {}),
    assigns
      ? apiGet("/api/v1/admin/users", undefined, { signal })
        .then((list) => { radiologists = list.filter((u) => u.role === "radiologist" && u.is_active); })
        .catch(() => {})
      : null,
  ].filter(Boolean);
  root.appendChild(
    h(
      "section",
      { class: "worklist-page" },
      h(
        "div",
        { class: "page-head" },
        h("h1", {}, t("worklist.title")),
        updated,
        claims ? h("button", { type: "button", class: "primary next-study", id: "next-study", "data-testid": "worklist-next", on: { click: takeNext } }, t("worklist.nextStudy")) : null,
      ),
      notice,
      filters,
      status,
      tableWrap,
      pager,
    ),
  );
  Promise.all(lookups).then(() => load());
  timer = setInterval(tick, REFRESH_MS);
  const onVisible = () => {
    if (document.visibilityState === "visible") tick();
  };
  document.addEventListener("visibilitychange", onVisible);
  return () => {
    clearInterval(timer);
    clearTimeout(debounce);
    document.removeEventListener("visibilitychange", onVisible);
    clinicsSeen = new Set();
  };
}

registerRoute({
  path: "/worklist",
  title: "worklist.title",
  roles: ["radiologist", "consultant", "admin"],
  home: ["radiologist", "consultant", "admin"],
  nav: true,
  order: 10,
  render: renderWorklist,
});
