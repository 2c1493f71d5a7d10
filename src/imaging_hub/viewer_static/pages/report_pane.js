// The report pane beside the viewer (mounted by the study page into its
// <aside data-testid="report-pane-slot">): the order's clinical question, a template with
// sections ("normal" text and ready phrases), findings and impression, the critical-result flag
// with its category, drafts saved on the hub as the user types (debounced PUT), signing with the
// password asked again, the signed documents (time, SHA-256, PDF) and addenda; the patient's
// prior signed report (collapsible, text only); a key image taken from the viewer's active
// viewport (instance, frame, window; a thumbnail from WADO-RS rendered; printed in the signed
// PDF); the study's
// consultations (escalate, the consultant's opinion) from consultation.js. API: docs/reports.md.
// Only the radiologist holding the claim writes the report; everyone else sees it read-only
// with the reason. All text from the API goes in with h() (textContent), never as markup.

import { addStrings, formatDateTime, formatDicomDate, getLanguage, t } from "../i18n.js";
import { apiBlob, apiGet, apiPost, request } from "../api.js";
import { h, messageBox, replaceChildren } from "../dom.js";
import { can } from "../router.js";
import { consultationBlock } from "./consultation.js";

addStrings({
  "zh-CN": {
    "report.title": "诊断报告",
    "report.clinicalQuestion": "临床问题",
    "report.template": "报告模板",
    "report.noTemplate": "（不使用模板）",
    "report.sections": "模板段落",
    "report.normal": "正常",
    "report.allNormal": "全部正常",
    "report.phrase": "常用语…",
    "report.findings": "检查所见",
    "report.impression": "诊断意见",
    "report.critical": "危急值",
    "report.criticalCategory": "危急值类别",
    "report.chooseCategory": "请选择类别",
    "report.save": "保存草稿",
    "report.sign": "签发",
    "report.status.none": "尚未书写报告",
    "report.status.draft": "草稿",
    "report.status.addendumDraft": "补充报告草稿",
    "report.status.saving": "正在保存…",
    "report.status.savedAt": "已于 {time} 保存",
    "report.status.unsaved": "有未保存的修改",
    "report.status.signed": "已签发 {time}",
    "report.status.saveFailed": "保存失败：{message}",
    "report.signedBy": "签发医生",
    "report.signedAt": "签发时间",
    "report.sha256": "SHA-256",
    "report.pdf": "下载 PDF",
    "report.addendum": "补充报告",
    "report.addendumOf": "补充报告（更正报告 #{id}）",
    "report.writeAddendum": "写补充报告",
    "report.signedReport": "已签发报告",
    "report.signDialog": "签发报告",
    "report.signExplain": "签发后报告不可更改。请再次输入您的登录密码以确认签名。",
    "report.password": "密码",
    "report.confirmSign": "确认签发",
    "report.cancel": "取消",
    "report.signing": "正在签名…",
    "report.needCategory": "请为危急值选择类别。",
    "report.needImpression": "诊断意见为空，不能签发。",
    "report.readonly.notHolder": "只读：只有认领此检查的医生可以书写报告。",
    "report.readonly.heldBy": "只读：此检查正由 {user} 阅片。",
    "report.readonly.unclaimed": "只读：请先领取此检查再书写报告。",
    "report.readonly.role": "只读：您的角色不能书写报告。",
    "report.readonly.escalated": "只读：此检查正在会诊中，等待会诊意见。",
    "report.readonly.signed": "报告已签发，不能再修改；如需更正请写补充报告。",
    "report.readonly.none": "尚无已签发的报告。",
    "report.criticalBand": "危急值：{category}",
    "report.acknowledged": "卫生院已确认接收（{time}，{user}）",
    "report.notAcknowledged": "卫生院尚未确认接收危急值",
    "report.prior": "上次报告",
    "report.priorMeta": "检查日期 {date} · {modality} · {radiologist} 签发于 {time}",
    "report.keyImage": "关键图像",
    "report.keyImageSet": "设为关键图像",
    "report.keyImageRemove": "移除关键图像",
    "report.keyImageNone": "未选关键图像：将查看器中显示的图像设为关键图像，签发时打印在报告中。",
    "report.keyImageAlt": "关键图像缩略图",
    "report.keyImageMeta": "第 {frame} 帧 · {window}",
    "report.keyImageOwnWindow": "图像自带窗宽窗位",
    "report.keyImageWindow": "窗位 {center} / 窗宽 {width}",
    "report.keyImageNoViewport": "请先在查看器中显示一幅本检查的图像。",
    "report.keyImagePrior": "关键图像必须来自本检查，不能取自对比的既往检查。",
    "event.report_drafted": "报告草稿",
    "event.addendum_drafted": "补充报告草稿",
    "event.addendum_signed": "补充报告已签发",
    "event.critical_notified": "危急值已通知",
    "event.critical_acknowledged": "危急值已确认",
    "event.critical_unacknowledged": "危急值未确认提醒",
  },
  en: {
    "report.title": "Report",
    "report.clinicalQuestion": "Clinical question",
    "report.template": "Template",
    "report.noTemplate": "(no template)",
    "report.sections": "Template sections",
    "report.normal": "Normal",
    "report.allNormal": "All normal",
    "report.phrase": "Phrases…",
    "report.findings": "Findings",
    "report.impression": "Impression",
    "report.critical": "Critical result",
    "report.criticalCategory": "Critical category",
    "report.chooseCategory": "Choose a category",
    "report.save": "Save draft",
    "report.sign": "Sign",
    "report.status.none": "No report written yet",
    "report.status.draft": "Draft",
    "report.status.addendumDraft": "Addendum draft",
    "report.status.saving": "Saving…",
    "report.status.savedAt": "saved at {time}",
    "report.status.unsaved": "unsaved changes",
    "report.status.signed": "Signed {time}",
    "report.status.saveFailed": "Not saved: {message}",
    "report.signedBy": "Signed by",
    "report.signedAt": "Signed at",
    "report.sha256": "SHA-256",
    "report.pdf": "Download PDF",
    "report.addendum": "Addendum",
    "report.addendumOf": "Addendum (amends report #{id})",
    "report.writeAddendum": "Write an addendum",
    "report.signedReport": "Signed report",
    "report.signDialog": "Sign the report",
    "report.signExplain": "A signed report never changes. Enter your login password again to sign.",
    "report.password": "Password",
    "report.confirmSign": "Sign now",
    "report.cancel": "Cancel",
    "report.signing": "Signing…",
    "report.needCategory": "Choose a category for the critical result.",
    "report.needImpression": "The impression is empty: the report cannot be signed.",
    "report.readonly.notHolder": "Read-only: only the radiologist holding the claim writes the report.",
    "report.readonly.heldBy": "Read-only: {user} is reading this study.",
    "report.readonly.unclaimed": "Read-only: claim the study to write its report.",
    "report.readonly.role": "Read-only: your role does not write reports.",
    "report.readonly.escalated": "Read-only: the study awaits a consultant's opinion.",
    "report.readonly.signed": "The report is signed and never changes; write an addendum to correct it.",
    "report.readonly.none": "No signed report yet.",
    "report.criticalBand": "Critical result: {category}",
    "report.acknowledged": "Acknowledged by the clinic ({time}, {user})",
    "report.notAcknowledged": "The clinic has not acknowledged the critical result yet",
    "report.prior": "Prior report",
    "report.priorMeta": "study of {date} · {modality} · signed by {radiologist} at {time}",
    "report.keyImage": "Key image",
    "report.keyImageSet": "Use as key image",
    "report.keyImageRemove": "Remove key image",
    "report.keyImageNone": "No key image: use the image shown in the viewer; it is printed in the signed report.",
    "report.keyImageAlt": "Key image thumbnail",
    "report.keyImageMeta": "frame {frame} · {window}",
    "report.keyImageOwnWindow": "the image's own window",
    "report.keyImageWindow": "centre {center} / width {width}",
    "report.keyImageNoViewport": "Show an image of this study in the viewer first.",
    "report.keyImagePrior": "The key image must come from this study, not from a prior shown for comparison.",
    "event.report_drafted": "Report drafted",
    "event.addendum_drafted": "Addendum drafted",
    "event.addendum_signed": "Addendum signed",
    "event.critical_notified": "Critical result notified",
    "event.critical_acknowledged": "Critical result acknowledged",
    "event.critical_unacknowledged": "Critical result not acknowledged",
  },
});

const SAVE_DELAY = 1200;
const THUMB_SIZE = 160;
const enc = encodeURIComponent;

/**
 * The image shown in the study page's active viewport ([data-testid=viewport], kept up to date
 * by study.js: data-series, data-sop, data-frame, data-window "centre,width") as a key image
 * reference, or null when none is shown. A viewport showing a prior study (.vp-prior) gives
 * { prior: true }.
 */
export function viewportKeyImage(root = document) {
  const vp = root.querySelector("[data-testid=viewport]");
  if (!vp || !vp.dataset.sop || !vp.dataset.series) return null;
  if (vp.closest(".vp-prior")) return { prior: true };
  const ref = { series_instance_uid: vp.dataset.series, sop_instance_uid: vp.dataset.sop, frame: Math.max(1, Number(vp.dataset.frame) || 1), window_center: null, window_width: null };
  const [center, width] = (vp.dataset.window || "").split(",").map(Number);
  if (vp.dataset.window && Number.isFinite(center) && Number.isFinite(width) && width > 0) {
    ref.window_center = center;
    ref.window_width = width;
  }
  return ref;
}

function hhmm(date) {
  return new Intl.DateTimeFormat(getLanguage(), { hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).format(date);
}

/** Download a signed report's PDF (apiBlob → object URL → a link with download); the URL is revoked soon after. */
export async function downloadReportPdf(report, { signal } = {}) {
  const blob = await apiBlob(`/api/v1/reports/${enc(report.id)}/pdf`, undefined, { signal });
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: `report-${report.id}.pdf`, hidden: true });
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

/** A signed document (report or addendum) as read-only text with its signature facts and PDF. */
export function signedDocument(report, { signal, onError } = {}) {
  const title = report.kind === "addendum" ? t("report.addendumOf", { id: report.predecessor_id }) : t("report.signedReport");
  const pdfButton = h(
    "button",
    {
      type: "button",
      class: "report-pdf",
      "data-testid": "report-pdf",
      dataset: { reportId: String(report.id) },
      on: {
        click: async () => {
          try {
            await downloadReportPdf(report, { signal });
          } catch (err) {
            if (err.name !== "AbortError" && onError) onError(err);
          }
        },
      },
    },
    t("report.pdf"),
  );
  return h(
    "article",
    { class: ["report-doc", report.kind === "addendum" ? "report-doc-addendum" : null], dataset: { reportId: String(report.id), kind: report.kind } },
    h("h3", {}, title),
    report.critical ? h("p", { class: "report-critical-band" }, t("report.criticalBand", { category: report.critical_category })) : null,
    report.critical
      ? h(
          "p",
          { class: report.acknowledged_at ? "report-ack" : "report-ack report-ack-open" },
          report.acknowledged_at
            ? t("report.acknowledged", { time: formatDateTime(report.acknowledged_at), user: report.acknowledged_by || "" })
            : t("report.notAcknowledged"),
        )
      : null,
    h("h4", {}, t("report.findings")),
    h("p", { class: "report-text report-findings-text" }, report.findings || "—"),
    h("h4", {}, t("report.impression")),
    h("p", { class: "report-text report-impression-text" }, report.impression || "—"),
    h(
      "dl",
      { class: "report-facts" },
      h("div", {}, h("dt", {}, t("report.signedBy")), h("dd", {}, report.signer_name || report.author_name || report.author)),
      h("div", {}, h("dt", {}, t("report.signedAt")), h("dd", {}, formatDateTime(report.signed_at))),
      h("div", {}, h("dt", {}, t("report.sha256")), h("dd", { class: "sha256", "data-testid": "report-sha256" }, report.sha256)),
    ),
    pdfButton,
  );
}

function readonlyReason(chain, item, user) {
  if (chain.report) return t("report.readonly.signed");
  if (!can("report.write", user)) return t("report.readonly.role");
  if (chain.study_status === "escalated") return t("report.readonly.escalated");
  if (item && item.status === "in_progress" && item.assigned_to && item.assigned_to !== user.username) {
    return t("report.readonly.heldBy", { user: item.assigned_to });
  }
  if (chain.study_status === "unread") return t("report.readonly.unclaimed");
  return t("report.readonly.notHolder");
}

/**
 * Mount the report pane into slot. options: { studyUid, study (GET /api/v1/studies/{uid}),
 * user, signal, onChange (after a signature, an escalation or an opinion: the page refreshes its
 * header and timeline) }. Returns a cleanup function.
 */
export function mountReportPane(slot, { studyUid, study, user, signal, onChange } = {}) {
  const base = `/api/v1/studies/${enc(studyUid)}`;
  const notify = () => {
    if (onChange) Promise.resolve(onChange()).catch((err) => console.warn(err));
  };
  let detail = study || null;
  let chain = null;
  let templates = [];
  let templatesLang = null;
  let saveTimer = null;
  let saving = Promise.resolve();
  let dirty = false;
  let editor = null; // { doc, fields… } while a draft is editable
  let observer = null;
  let reloadTimer = null;
  let disposed = false;
  let lastKey = "";
  let thumbUrl = null; // the key image thumbnail's object URL, revoked when replaced
  const consultSlot = h("div", { class: "report-consult" });

  const pane = h("section", { class: "report-pane", id: "report-pane", "aria-label": t("report.title") });
  slot.appendChild(pane);

  async function fetchTemplates() {
    if (templatesLang === getLanguage() && templates.length) return;
    const item = detail && detail.study ? detail.study : {};
    const modality = (item.modalities || "").split("\\").filter(Boolean)[0];
    templates = await apiGet(
      "/api/v1/report-templates",
      { lang: getLanguage(), modality, body_part: item.body_part_examined || undefined },
      { signal },
    );
    templatesLang = getLanguage();
  }

  async function load({ fresh = false } = {}) {
    const tasks = [apiGet(`${base}/report`, undefined, { signal })];
    if (fresh || !detail) tasks.push(apiGet(base, undefined, { signal }));
    const [c, d] = await Promise.all(tasks);
    chain = c;
    if (d) detail = d;
    await fetchTemplates();
  }

  function editableDoc() {
    if (chain.draft) {
      if (chain.draft.kind === "report" && chain.can_write_report) return chain.draft;
      if (chain.draft.kind === "addendum" && chain.can_write_addendum) return chain.draft;
    }
    if (!chain.report && chain.can_write_report) return { kind: "report", id: null, template: "", findings: "", impression: "", critical: false, critical_category: "", key_image: null };
    return null;
  }

  function stateKey() {
    if (!chain) return "";
    return [chain.study_status, chain.can_write_report, chain.can_write_addendum, chain.report && chain.report.id, chain.addenda.length, chain.draft && chain.draft.id, detail && detail.study && detail.study.assigned_to, detail && (detail.consultations || []).map((c) => `${c.id}:${c.status}`).join(",")].join("|");
  }

  function setStatus(el, kind, text) {
    el.dataset.status = kind;
    replaceChildren(el, text);
  }

  // Whether the prior report is unfolded, kept over the pane's re-renders.
  let priorOpen = false;

  /** The patient's previous signed report (chain.prior_report), text only, collapsible. */
  function priorBlock(prior) {
    if (!prior) return null;
    const details = h(
      "details",
      { class: "report-prior", id: "report-prior", "data-testid": "report-prior", dataset: { reportId: String(prior.id), studyUid: prior.study_instance_uid } },
      h("summary", {}, t("report.prior")),
      h(
        "p",
        { class: "report-prior-meta muted" },
        t("report.priorMeta", {
          date: formatDicomDate(prior.study_date) || "—",
          modality: prior.modality || "—",
          radiologist: prior.radiologist,
          time: formatDateTime(prior.signed_at),
        }),
      ),
      h("span", { class: "report-label" }, t("report.findings")),
      h("p", { class: "report-text", "data-testid": "report-prior-findings" }, prior.findings),
      h("span", { class: "report-label" }, t("report.impression")),
      h("p", { class: "report-text", "data-testid": "report-prior-impression" }, prior.impression),
    );
    details.open = priorOpen;
    details.addEventListener("toggle", () => {
      priorOpen = details.open;
    });
    return details;
  }

  function render() {
    if (disposed) return;
    lastKey = stateKey();
    const item = detail && detail.study ? detail.study : null;
    const messages = h("div", { class: "report-messages", "aria-live": "polite" });
    const showError = (err) => replaceChildren(messages, messageBox("error", err.message || String(err)));
    const status = h("p", { class: "report-status", id: "report-status", "data-testid": "report-status", role: "status" });
    const doc = editableDoc();
    const signedDocs = [chain.report, ...chain.addenda].filter(Boolean);
    const latest = signedDocs[signedDocs.length - 1];
    if (doc) {
      const label = doc.kind === "addendum" ? t("report.status.addendumDraft") : t("report.status.draft");
      const saved = doc.updated_at ? ` · ${t("report.status.savedAt", { time: hhmm(new Date(doc.updated_at)) })}` : "";
      setStatus(status, doc.id ? "draft" : "none", doc.id ? `${label}${saved}` : t("report.status.none"));
    } else if (latest) {
      setStatus(status, "signed", `${t("report.status.signed", { time: formatDateTime(latest.signed_at) })} · SHA-256 ${latest.sha256.slice(0, 16)}…`);
      status.dataset.sha256 = latest.sha256;
    } else {
      setStatus(status, "none", t("report.status.none"));
    }

    const parts = [
      h("h2", { class: "report-title" }, t("report.title")),
      chain.clinical_question
        ? h("div", { class: "report-question", id: "report-question" }, h("span", { class: "report-label" }, t("report.clinicalQuestion")), h("p", {}, chain.clinical_question))
        : null,
      status,
      messages,
      priorBlock(chain.prior_report),
    ];
    parts.push(signedDocs.map((r) => signedDocument(r, { signal, onError: showError })));
    // A consultation (with its opinion) is input for the report: above the editor when there is one.
    const consultFirst = Boolean(detail && (detail.consultations || []).length);
    if (consultFirst) parts.push(consultSlot);

    editor = null;
    if (thumbUrl) URL.revokeObjectURL(thumbUrl);
    thumbUrl = null;
    if (doc) {
      parts.push(editorBlock(doc, status, messages, showError));
    } else {
      parts.push(h("p", { class: "report-readonly", id: "report-readonly" }, readonlyReason(chain, item, user)));
      // Keep the hooks present (read-only), so a watcher sees the pane's state.
      if (!signedDocs.length && can("report.write", user)) {
        parts.push(
          h("textarea", { class: "report-field", "data-testid": "report-findings", readonly: true, "aria-label": t("report.findings"), rows: "3" }),
          h("textarea", { class: "report-field", "data-testid": "report-impression", readonly: true, "aria-label": t("report.impression"), rows: "2" }),
        );
      }
      if (chain.report && chain.can_write_addendum) {
        parts.push(
          h(
            "button",
            {
              type: "button",
              id: "report-addendum",
              "data-testid": "report-addendum",
              on: {
                click: async (event) => {
                  event.target.disabled = true;
                  try {
                    await apiPost(`${base}/report/addenda`, {}, { signal });
                    await load();
                    render();
                  } catch (err) {
                    if (err.name === "AbortError") return;
                    event.target.disabled = false;
                    showError(err);
                  }
                },
              },
            },
            t("report.writeAddendum"),
          ),
        );
      }
    }
    if (!consultFirst) parts.push(consultSlot);
    replaceChildren(pane, parts);
    renderConsultations();
  }

  function renderConsultations() {
    replaceChildren(
      consultSlot,
      consultationBlock({
        studyUid,
        detail,
        user,
        signal,
        // Typed text reaches the hub before the study changes hands.
        beforeAction: () => (editor ? editor.flush().catch(() => {}) : undefined),
        onChange: async () => {
          await refresh(true);
          notify();
        },
      }),
    );
  }

  function editorBlock(doc, status, messages, showError) {
    const values = {
      template: doc.template || "",
      findings: doc.findings || "",
      impression: doc.impression || "",
      critical: Boolean(doc.critical),
      critical_category: doc.critical_category || "",
    };
    let keyImage = doc.key_image || null;
    if (!doc.id && !values.template) values.template = chain.suggested_template || (templates.find((x) => x.matches) || {}).code || "";
    let current = doc;

    const findings = h("textarea", { id: "report-findings", class: "report-field", "data-testid": "report-findings", rows: "8", maxlength: "20000" });
    findings.value = values.findings;
    const impression = h("textarea", { id: "report-impression", class: "report-field", "data-testid": "report-impression", rows: "4", maxlength: "10000" });
    impression.value = values.impression;
    const critical = h("input", { type: "checkbox", id: "report-critical", "data-testid": "report-critical", checked: values.critical });
    const category = h(
      "select",
      { id: "report-critical-category", "data-testid": "report-critical-category", disabled: !values.critical },
      h("option", { value: "" }, t("report.chooseCategory")),
      (chain.critical_categories || []).map((c) => h("option", { value: c, selected: c === values.critical_category }, c)),
    );
    const templateSelect = h(
      "select",
      { id: "report-template", "data-testid": "report-template" },
      h("option", { value: "" }, t("report.noTemplate")),
      templates.map((tpl) => h("option", { value: tpl.code, selected: tpl.code === values.template }, tpl.title)),
    );
    const sectionBox = h("div", { class: "report-sections", id: "report-sections" });
    const fieldOf = (name) => (name === "impression" ? impression : findings);

    function insert(field, text) {
      const el = fieldOf(field);
      const before = el.value.replace(/\s+$/, "");
      el.value = before ? `${before}\n${text}` : text;
      changed();
    }

    function renderSections() {
      const tpl = templates.find((x) => x.code === templateSelect.value);
      if (!tpl) {
        replaceChildren(sectionBox);
        return;
      }
      const line = (s, text) => (s.field === "findings" ? `${s.title}：${text}` : text);
      replaceChildren(
        sectionBox,
        h(
          "div",
          { class: "report-sections-head" },
          h("span", { class: "report-label" }, t("report.sections")),
          h(
            "button",
            { type: "button", id: "report-all-normal", class: "small", on: { click: () => tpl.sections.forEach((s) => s.normal && insert(s.field, line(s, s.normal))) } },
            t("report.allNormal"),
          ),
        ),
        tpl.sections.map((s) => {
          const phrases = h(
            "select",
            { class: "report-phrase", "aria-label": `${s.title} ${t("report.phrase")}`, dataset: { section: s.code } },
            h("option", { value: "" }, t("report.phrase")),
            (s.picklist || []).map((p, i) => h("option", { value: String(i) }, p)),
          );
          phrases.addEventListener("change", () => {
            const phrase = (s.picklist || [])[Number(phrases.value)];
            if (phrases.value !== "" && phrase) insert(s.field, line(s, phrase));
            phrases.value = "";
          });
          return h(
            "div",
            { class: "report-section", dataset: { section: s.code, field: s.field } },
            h("span", { class: "report-section-title" }, s.title),
            s.normal
              ? h("button", { type: "button", class: "small report-normal", dataset: { section: s.code }, title: s.normal, on: { click: () => insert(s.field, line(s, s.normal)) } }, t("report.normal"))
              : null,
            s.picklist && s.picklist.length ? phrases : null,
          );
        }),
      );
    }

    function collect() {
      return {
        template: templateSelect.value,
        findings: findings.value,
        impression: impression.value,
        critical: critical.checked,
        critical_category: critical.checked ? category.value : "",
        key_image: keyImage,
      };
    }

    const keyBox = h("div", { class: "report-key-image", id: "report-key-image", "data-testid": "report-key-image" });

    function setThumbUrl(url) {
      if (thumbUrl) URL.revokeObjectURL(thumbUrl);
      thumbUrl = url;
    }

    /** The marked image: a thumbnail (WADO-RS rendered, windowed as marked) and a remove button. */
    function renderKeyImage() {
      const setButton = h(
        "button",
        { type: "button", class: "small", id: "report-key-image-set", "data-testid": "report-key-image-set", on: { click: () => markKeyImage() } },
        t("report.keyImageSet"),
      );
      const head = h("div", { class: "report-sections-head" }, h("span", { class: "report-label" }, t("report.keyImage")), setButton);
      delete keyBox.dataset.loaded;
      if (!keyImage) {
        setThumbUrl(null);
        keyBox.dataset.sop = "";
        replaceChildren(keyBox, head, h("p", { class: "muted report-key-image-none" }, t("report.keyImageNone")));
        return;
      }
      const ref = keyImage;
      keyBox.dataset.sop = ref.sop_instance_uid;
      keyBox.dataset.frame = String(ref.frame);
      const hasWindow = ref.window_center !== null && ref.window_center !== undefined && ref.window_width;
      const img = h("img", { class: "report-key-image-thumb", "data-testid": "report-key-image-thumb", alt: t("report.keyImageAlt"), hidden: true });
      const remove = h(
        "button",
        {
          type: "button",
          class: "small",
          id: "report-key-image-remove",
          "data-testid": "report-key-image-remove",
          on: {
            click: () => {
              keyImage = null;
              renderKeyImage();
              changed();
            },
          },
        },
        t("report.keyImageRemove"),
      );
      const windowText = hasWindow ? t("report.keyImageWindow", { center: Math.round(ref.window_center), width: Math.round(ref.window_width) }) : t("report.keyImageOwnWindow");
      replaceChildren(
        keyBox,
        head,
        h("figure", { class: "report-key-image-figure" }, img, h("figcaption", { class: "muted" }, t("report.keyImageMeta", { frame: ref.frame, window: windowText }), " ", remove)),
      );
      const path = `/dicomweb/studies/${enc(studyUid)}/series/${enc(ref.series_instance_uid)}/instances/${enc(ref.sop_instance_uid)}/frames/${enc(ref.frame)}/rendered`;
      const params = { viewport: `${THUMB_SIZE},${THUMB_SIZE}`, window: hasWindow ? `${ref.window_center},${ref.window_width},LINEAR` : undefined };
      apiBlob(path, params, { signal, headers: { Accept: "image/jpeg" } })
        .then((blob) => {
          if (keyImage !== ref || disposed) return;
          const url = URL.createObjectURL(blob);
          setThumbUrl(url);
          img.addEventListener("load", () => {
            img.hidden = false;
            keyBox.dataset.loaded = "true";
          }, { once: true });
          img.src = url;
        })
        .catch((err) => {
          if (err.name !== "AbortError" && keyImage === ref) showError(err);
        });
    }

    /** Take the image, frame and window of the viewer's active viewport as the key image. */
    function markKeyImage() {
      replaceChildren(messages);
      const ref = viewportKeyImage();
      if (!ref) {
        showError(new Error(t("report.keyImageNoViewport")));
        return;
      }
      if (ref.prior) {
        showError(new Error(t("report.keyImagePrior")));
        return;
      }
      keyImage = ref;
      renderKeyImage();
      changed();
      save().catch(() => {});
    }

    function showSaved() {
      const label = current.kind === "addendum" ? t("report.status.addendumDraft") : t("report.status.draft");
      setStatus(status, "draft", `${label} · ${t("report.status.savedAt", { time: hhmm(new Date()) })}`);
    }

    async function saveNow() {
      clearTimeout(saveTimer);
      saveTimer = null;
      if (!dirty && current.id) return;
      const body = collect();
      if (body.critical && !body.critical_category) {
        // The hub refuses a critical flag without a category: keep it local until one is chosen.
        body.critical = false;
      }
      dirty = false;
      setStatus(status, current.id ? "draft" : "none", t("report.status.saving"));
      try {
        let saved;
        if (current.kind === "report" && !current.id) {
          // No abort signal: a save started before leaving the page still completes.
          saved = await request(`${base}/report`, { method: "PUT", body }).then((r) => r.json());
        } else {
          saved = await request(`/api/v1/reports/${enc(current.id)}`, { method: "PUT", body }).then((r) => r.json());
        }
        current = saved;
        editor.doc = saved;
        if (!dirty) showSaved();
        replaceChildren(messages);
      } catch (err) {
        if (err.name === "AbortError") return;
        dirty = true;
        setStatus(status, "error", t("report.status.saveFailed", { message: err.message }));
        if (err.code === "report_key_image_invalid" && body.key_image) {
          // The hub refused the marked image (not of this study): drop it, keep the text.
          keyImage = null;
          renderKeyImage();
          showError(err);
          changed(); // saved again without it
        }
        if (["report_not_holder", "report_already_signed", "report_not_author"].includes(err.code)) {
          dirty = false;
          await refresh(true);
          showError(err);
        }
        throw err;
      }
    }

    function save() {
      saving = saving.catch(() => {}).then(saveNow);
      return saving;
    }

    function changed() {
      dirty = true;
      setStatus(status, current.id ? "draft" : "none", `${current.kind === "addendum" ? t("report.status.addendumDraft") : t("report.status.draft")} · ${t("report.status.unsaved")}`);
      clearTimeout(saveTimer);
      saveTimer = setTimeout(() => save().catch(() => {}), SAVE_DELAY);
    }

    findings.addEventListener("input", changed);
    impression.addEventListener("input", changed);
    critical.addEventListener("change", () => {
      category.disabled = !critical.checked;
      pane.classList.toggle("report-pane-critical", critical.checked);
      changed();
    });
    category.addEventListener("change", changed);
    templateSelect.addEventListener("change", () => {
      renderSections();
      changed();
    });
    pane.classList.toggle("report-pane-critical", values.critical);
    renderSections();
    renderKeyImage();

    const signButton = h("button", { type: "button", id: "report-sign", class: "primary", "data-testid": "report-sign", on: { click: () => openSign() } }, t("report.sign"));
    const saveButton = h("button", { type: "button", id: "report-save", "data-testid": "report-save", on: { click: () => save().catch(() => {}) } }, t("report.save"));

    async function openSign() {
      replaceChildren(messages);
      const body = collect();
      if (body.critical && !body.critical_category) {
        showError(new Error(t("report.needCategory")));
        category.focus();
        return;
      }
      if (!body.impression.trim()) {
        showError(new Error(t("report.needImpression")));
        impression.focus();
        return;
      }
      dirty = true;
      try {
        await save();
      } catch (err) {
        if (err.name !== "AbortError") showError(err);
        return;
      }
      signDialog(current, showError);
    }

    editor = { doc: current, flush: () => (dirty || saveTimer ? save() : saving) };
    return h(
      "div",
      { class: "report-editor", id: "report-editor", dataset: { kind: doc.kind } },
      doc.kind === "addendum" ? h("h3", {}, t("report.addendumOf", { id: doc.predecessor_id })) : null,
      h("div", { class: "field" }, h("label", { for: "report-template" }, t("report.template")), templateSelect),
      sectionBox,
      h("div", { class: "field" }, h("label", { for: "report-findings" }, t("report.findings")), findings),
      h("div", { class: "field" }, h("label", { for: "report-impression" }, t("report.impression")), impression),
      h(
        "div",
        { class: "report-critical-row" },
        h("label", { class: "check", for: "report-critical" }, critical, t("report.critical")),
        h("label", { class: "sr-only", for: "report-critical-category" }, t("report.criticalCategory")),
        category,
      ),
      keyBox,
      h("div", { class: "report-actions" }, saveButton, signButton),
    );
  }

  function signDialog(doc, showError) {
    const password = h("input", { type: "password", id: "report-sign-password", "data-testid": "report-sign-password", autocomplete: "current-password", required: true, maxlength: "1024" });
    const error = h("div", { class: "report-sign-error", "aria-live": "assertive" });
    const confirm = h("button", { type: "submit", class: "primary", id: "report-sign-confirm", "data-testid": "report-sign-confirm" }, t("report.confirmSign"));
    const cancel = h("button", { type: "button", id: "report-sign-cancel", on: { click: () => close() } }, t("report.cancel"));
    const form = h(
      "form",
      { method: "dialog", class: "report-sign-form" },
      h("h2", {}, t("report.signDialog")),
      h("p", {}, t("report.signExplain")),
      h("div", { class: "field" }, h("label", { for: "report-sign-password" }, t("report.password")), password),
      error,
      h("div", { class: "report-actions" }, cancel, confirm),
    );
    const dialog = h("dialog", { class: "report-sign-dialog", id: "report-sign-dialog", "aria-label": t("report.signDialog") }, form);
    function close() {
      password.value = "";
      if (dialog.open) dialog.close();
      dialog.remove();
    }
    dialog.addEventListener("cancel", () => setTimeout(close));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!password.value) {
        password.focus();
        return;
      }
      confirm.disabled = true;
      cancel.disabled = true;
      replaceChildren(error, messageBox("info", t("report.signing")));
      try {
        await apiPost(`/api/v1/reports/${enc(doc.id)}/sign`, { password: password.value }, { signal });
        close();
        await refresh(true);
        notify();
      } catch (err) {
        if (err.name === "AbortError") return;
        confirm.disabled = false;
        cancel.disabled = false;
        password.value = "";
        replaceChildren(error, messageBox("error", err.message));
        password.focus();
        if (err.status !== 401 && err.status !== 429 && err.status !== 422) {
          close();
          showError(err);
          await refresh(true).catch(() => {});
        }
      }
    });
    document.body.appendChild(dialog);
    dialog.showModal();
    password.focus();
  }

  async function refresh(fresh = false) {
    if (disposed) return;
    await load({ fresh });
    render();
  }

  /** Reload when the claim changes on the page (claim/release) without losing typed text. */
  async function recheck() {
    if (disposed) return;
    try {
      if (editor) await editor.flush();
      await load({ fresh: true });
      if (stateKey() !== lastKey) render();
    } catch (err) {
      if (err.name !== "AbortError") console.warn(err);
    }
  }

  const claimBox = document.getElementById("claim-box");
  if (claimBox && typeof MutationObserver === "function") {
    observer = new MutationObserver(() => {
      clearTimeout(reloadTimer);
      reloadTimer = setTimeout(recheck, 400);
    });
    observer.observe(claimBox, { childList: true });
  }
  // Someone else's action (an opinion arrived, a consultant, a signature): look again now and then.
  const poll = setInterval(() => {
    if (!dirty && !saveTimer) recheck();
  }, 30000);

  replaceChildren(pane, h("p", { class: "loading" }, t("app.loading")));
  refresh(!detail).catch((err) => {
    if (err.name === "AbortError") return;
    replaceChildren(pane, messageBox("error", err.message), h("button", { type: "button", on: { click: () => refresh(true).catch(() => {}) } }, t("common.retry")));
  });

  const onUnload = () => {
    if (editor && (dirty || saveTimer)) editor.flush().catch(() => {});
  };
  window.addEventListener("pagehide", onUnload);

  return () => {
    onUnload();
    disposed = true;
    if (thumbUrl) URL.revokeObjectURL(thumbUrl);
    thumbUrl = null;
    clearTimeout(reloadTimer);
    clearInterval(poll);
    if (observer) observer.disconnect();
    window.removeEventListener("pagehide", onUnload);
    const dialog = document.getElementById("report-sign-dialog");
    if (dialog) dialog.remove();
  };
}
