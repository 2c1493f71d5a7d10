// Consultation (escalation) in the browser, shown in the report pane: the study's consultations
// with question and opinion; "escalate" for the radiologist holding the claim (a question and a
// city/provincial institution above theirs, picked from GET /api/v1/consultations/targets:
// POST /api/v1/studies/{uid}/escalate); the
// consultant's opinion form on an open consultation (POST /api/v1/consultations/{id}/opinion);
// withdrawing an open one (the asker). API: docs/worklist.md "Escalation".

import { knownInstitutionName, loadInstitutions } from "../institutions.js";
import { addStrings, formatDateTime, hasString, t } from "../i18n.js";
import { apiGet, apiPost } from "../api.js";
import { h, messageBox, replaceChildren } from "../dom.js";
import { can } from "../router.js";

addStrings({
  "zh-CN": {
    "consult.title": "会诊",
    "consult.escalate": "申请会诊",
    "consult.institution": "会诊机构",
    "consult.target": "{name}（{level}）",
    "consult.noTargets": "本机构之上没有可申请会诊的市级或省级机构。",
    "consult.level.city": "市级",
    "consult.level.province": "省级",
    "consult.question": "会诊问题",
    "consult.submit": "提交会诊申请",
    "consult.cancel": "取消",
    "consult.to": "会诊机构：{institution}",
    "consult.askedBy": "{user} 于 {time} 提问",
    "consult.answeredBy": "{user} 于 {time} 答复",
    "consult.opinion": "会诊意见",
    "consult.opinionSubmit": "提交会诊意见",
    "consult.withdraw": "撤回会诊",
    "consult.waiting": "等待会诊意见…",
    "consult.needQuestion": "请填写会诊问题和会诊机构。",
    "consult.needOpinion": "请填写会诊意见。",
    "consult.status.open": "待答复",
    "consult.status.answered": "已答复",
    "consult.status.withdrawn": "已撤回",
    "consult.status.closed": "已结束",
    "consult.status.forwarded": "已转上级",
  },
  en: {
    "consult.title": "Consultation",
    "consult.escalate": "Escalate",
    "consult.institution": "Institution",
    "consult.target": "{name} ({level})",
    "consult.noTargets": "No city or provincial institution above yours to ask.",
    "consult.level.city": "city",
    "consult.level.province": "province",
    "consult.question": "Question",
    "consult.submit": "Ask for an opinion",
    "consult.cancel": "Cancel",
    "consult.to": "Asked: {institution}",
    "consult.askedBy": "asked by {user} at {time}",
    "consult.answeredBy": "answered by {user} at {time}",
    "consult.opinion": "Opinion",
    "consult.opinionSubmit": "Send the opinion",
    "consult.withdraw": "Withdraw",
    "consult.waiting": "Awaiting the opinion…",
    "consult.needQuestion": "Enter a question and an institution.",
    "consult.needOpinion": "Enter the opinion.",
    "consult.status.open": "Open",
    "consult.status.answered": "Answered",
    "consult.status.withdrawn": "Withdrawn",
    "consult.status.closed": "Closed",
    "consult.status.forwarded": "Forwarded",
  },
});

const enc = encodeURIComponent;

function levelText(level) {
  return hasString(`consult.level.${level}`) ? t(`consult.level.${level}`) : level;
}

function statusText(status) {
  return hasString(`consult.status.${status}`) ? t(`consult.status.${status}`) : status;
}

/** The institutions the caller may escalate to (GET /api/v1/consultations/targets): the city
 * and provincial ones above the caller's institution, nearest first. */
async function consultingTargets(signal) {
  const list = await apiGet("/api/v1/consultations/targets", undefined, { signal });
  return Array.isArray(list) ? list : [];
}

function consultationItem(c, { user, signal, onChange, showError }) {
  const parts = [
    h(
      "div",
      { class: "consult-head" },
      h("span", { class: ["chip", `consult-${c.status}`] }, statusText(c.status)),
      h("span", { class: "consult-to", title: c.to_institution, "data-code": c.to_institution }, t("consult.to", { institution: knownInstitutionName(c.to_institution) })),
    ),
    h("p", { class: "consult-question" }, c.question),
    h("p", { class: "consult-meta" }, t("consult.askedBy", { user: c.requested_by, time: formatDateTime(c.requested_at) })),
  ];
  if (c.opinion) {
    parts.push(
      h("h4", {}, t("consult.opinion")),
      h("p", { class: "consult-opinion-text", "data-testid": "consult-opinion-text" }, c.opinion),
      h("p", { class: "consult-meta" }, t("consult.answeredBy", { user: c.consultant || "", time: formatDateTime(c.answered_at) })),
    );
  } else if (c.status === "open") {
    if (can("study.opinion", user)) {
      const text = h("textarea", { id: `consult-opinion-${c.id}`, class: "report-field", "data-testid": "consult-opinion", rows: "4", maxlength: "10000" });
      const send = h("button", { type: "submit", class: "primary", "data-testid": "consult-opinion-submit", id: `consult-opinion-submit-${c.id}` }, t("consult.opinionSubmit"));
      const form = h(
        "form",
        { class: "consult-opinion-form" },
        h("label", { for: `consult-opinion-${c.id}` }, t("consult.opinion")),
        text,
        send,
      );
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        if (!text.value.trim()) {
          showError(new Error(t("consult.needOpinion")));
          return;
        }
        send.disabled = true;
        try {
          await apiPost(`/api/v1/consultations/${enc(c.id)}/opinion`, { opinion: text.value }, { signal });
          await onChange();
        } catch (err) {
          if (err.name === "AbortError") return;
          send.disabled = false;
          showError(err);
        }
      });
      parts.push(form);
    } else {
      parts.push(h("p", { class: "consult-meta" }, t("consult.waiting")));
      if (can("study.escalate", user) && c.requested_by === user.username) {
        parts.push(
          h(
            "button",
            {
              type: "button",
              class: "small",
              "data-testid": "consult-withdraw",
              on: {
                click: async (event) => {
                  event.target.disabled = true;
                  try {
                    await apiPost(`/api/v1/consultations/${enc(c.id)}/withdraw`, undefined, { signal });
                    await onChange();
                  } catch (err) {
                    if (err.name === "AbortError") return;
                    event.target.disabled = false;
                    showError(err);
                  }
                },
              },
            },
            t("consult.withdraw"),
          ),
        );
      }
    }
  }
  return h("li", { class: "consult-item", "data-testid": "consult-item", dataset: { id: String(c.id), status: c.status } }, parts);
}

/**
 * The study's consultations block: options { studyUid, detail (GET /api/v1/studies/{uid}), user,
 * signal, onChange (async; after an escalation, opinion or withdrawal), beforeAction (async;
 * before an escalation: the pane saves the draft) }.
 */
export function consultationBlock({ studyUid, detail, user, signal, onChange, beforeAction }) {
  const consultations = (detail && detail.consultations) || [];
  const item = (detail && detail.study) || {};
  const messages = h("div", { class: "consult-messages", "aria-live": "polite" });
  const showError = (err) => replaceChildren(messages, messageBox("error", err.message || String(err)));
  const holder = item.status === "in_progress" && item.assigned_to === user.username;
  const canEscalate = can("study.escalate", user) && holder;
  if (!consultations.length && !canEscalate) return h("div", { class: "consult-block consult-empty" });

  const formSlot = h("div", { class: "consult-form-slot" });
  function openForm() {
    const institution = h("select", { id: "escalate-institution", "data-testid": "escalate-institution", required: true, disabled: true });
    consultingTargets(signal)
      .then((targets) => {
        replaceChildren(
          institution,
          targets.map((i) => h("option", { value: i.code }, t("consult.target", { name: i.name, level: levelText(i.level), code: i.code }))),
        );
        institution.disabled = !targets.length;
        if (!targets.length) showError(new Error(t("consult.noTargets")));
      })
      .catch((err) => {
        if (err.name !== "AbortError") showError(err);
      });
    const question = h("textarea", { id: "escalate-question", class: "report-field", "data-testid": "escalate-question", rows: "3", maxlength: "10000", required: true });
    const submit = h("button", { type: "submit", class: "primary", id: "escalate-submit", "data-testid": "escalate-submit" }, t("consult.submit"));
    const form = h(
      "form",
      { class: "consult-escalate-form", id: "escalate-form" },
      h("div", { class: "field" }, h("label", { for: "escalate-institution" }, t("consult.institution")), institution),
      h("div", { class: "field" }, h("label", { for: "escalate-question" }, t("consult.question")), question),
      h("div", { class: "report-actions" }, h("button", { type: "button", on: { click: () => replaceChildren(formSlot) } }, t("consult.cancel")), submit),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const code = institution.value;
      if (!code || !question.value.trim()) {
        showError(new Error(t("consult.needQuestion")));
        return;
      }
      submit.disabled = true;
      try {
        if (beforeAction) await beforeAction();
        await apiPost(`/api/v1/studies/${enc(studyUid)}/escalate`, { institution: code, question: question.value }, { signal });
        await onChange();
      } catch (err) {
        if (err.name === "AbortError") return;
        submit.disabled = false;
        showError(err);
      }
    });
    replaceChildren(formSlot, form);
    question.focus();
  }

  const hasOpen = consultations.some((c) => c.status === "open");
  const list = consultations.length
    ? h("ul", { class: "consult-list", id: "consult-list" }, consultations.map((c) => consultationItem(c, { user, signal, onChange, showError })))
    : null;
  if (list) {
    // Institutions by name, not code (GET /api/v1/institutions, loaded once per page load).
    loadInstitutions()
      .then(() => {
        for (const el of list.querySelectorAll(".consult-to[data-code]")) {
          el.textContent = t("consult.to", { institution: knownInstitutionName(el.dataset.code) });
        }
      })
      .catch(() => {});
  }
  return h(
    "div",
    { class: "consult-block", id: "consultations" },
    h("h3", {}, t("consult.title")),
    messages,
    list,
    canEscalate && !hasOpen
      ? h("button", { type: "button", id: "escalate", "data-testid": "escalate", on: { click: openForm } }, t("consult.escalate"))
      : null,
    formSlot,
  );
}
