// The notifications badge in the top bar: the caller's unread notifications
// (GET /api/v1/notifications, polled every 30 s and on each page change) — an opinion arrived,
// an overdue STAT study, a consultation asked, a critical result (clinic), a critical result
// still unacknowledged (radiologist, admins) — with a list that links to the study and marks
// items read (POST /api/v1/notifications/{id}/read).

import { addStrings, formatDateTime, hasString, onLanguageChange, t } from "./i18n.js";
import { apiGet, apiPost, isLoggedIn } from "./api.js";
import { clear, h, messageBox, replaceChildren } from "./dom.js";
import { currentUser, onBeforeRender, onUserChange } from "./router.js";

addStrings({
  "zh-CN": {
    "notify.title": "通知",
    "notify.empty": "没有未读通知。",
    "notify.markRead": "标为已读",
    "notify.markAll": "全部标为已读",
    "notify.open": "打开检查",
    "notify.kind.opinion": "会诊意见已送达",
    "notify.kind.consultation": "新的会诊申请",
    "notify.kind.consultation_forwarded": "会诊已转上级机构",
    "notify.kind.overdue_stat": "急诊检查已超时",
    "notify.kind.assigned": "新指派的检查",
    "notify.kind.critical_result": "危急值报告，请确认接收",
    "notify.kind.critical_unacknowledged": "危急值报告尚未被卫生院确认",
  },
  en: {
    "notify.title": "Notifications",
    "notify.empty": "No unread notifications.",
    "notify.markRead": "Mark read",
    "notify.markAll": "Mark all read",
    "notify.open": "Open the study",
    "notify.kind.opinion": "A consultant's opinion arrived",
    "notify.kind.consultation": "New consultation request",
    "notify.kind.consultation_forwarded": "Consultation forwarded up the chain",
    "notify.kind.overdue_stat": "STAT study overdue",
    "notify.kind.assigned": "Study assigned to you",
    "notify.kind.critical_result": "Critical result: please acknowledge",
    "notify.kind.critical_unacknowledged": "Critical result not acknowledged by the clinic",
  },
});

const POLL_MS = 30000;
const URGENT = new Set(["critical_result", "critical_unacknowledged", "overdue_stat"]);

function kindLabel(kind) {
  return hasString(`notify.kind.${kind}`) ? t(`notify.kind.${kind}`) : kind;
}

/** Put the badge into the top bar (before the language switch); it follows the logged-in user. */
export function mountNotifications(topbar) {
  let items = [];
  let timer = null;
  let error = null;
  const count = h("span", { class: "notify-count", id: "notifications-count", "data-testid": "notifications-count", hidden: true });
  const label = h("span", { class: "notify-label" });
  const button = h("button", { type: "button", class: "notify-button", id: "notifications", "data-testid": "notifications", "aria-expanded": "false", "aria-haspopup": "true" }, label, count);
  const panel = h("div", { class: "notify-panel", id: "notifications-panel", role: "region", hidden: true });
  const box = h("div", { class: "notify", hidden: true }, button, panel);
  const before = topbar.querySelector("#lang-switch");
  topbar.insertBefore(box, before);

  function unread() {
    return items.filter((n) => !n.read);
  }

  function renderBadge() {
    label.textContent = t("notify.title");
    button.setAttribute("aria-label", t("notify.title"));
    const list = unread();
    count.hidden = list.length === 0;
    count.textContent = String(list.length);
    box.classList.toggle("notify-urgent", list.some((n) => URGENT.has(n.kind)));
    if (!panel.hidden) renderPanel();
  }

  async function markRead(ids) {
    try {
      for (const id of ids) await apiPost(`/api/v1/notifications/${encodeURIComponent(id)}/read`);
      error = null;
    } catch (err) {
      error = err;
    }
    await load();
  }

  function renderPanel() {
    const list = unread();
    replaceChildren(
      panel,
      h("h2", {}, t("notify.title")),
      error ? messageBox("error", error.message) : null,
      list.length
        ? h(
            "ul",
            { class: "notify-list", id: "notifications-list" },
            list.map((n) =>
              h(
                "li",
                { class: ["notify-item", URGENT.has(n.kind) ? "notify-item-urgent" : null], "data-testid": "notification", dataset: { kind: n.kind, id: String(n.id) } },
                h("span", { class: "notify-kind" }, kindLabel(n.kind)),
                h("span", { class: "notify-at" }, formatDateTime(n.at)),
                n.study_instance_uid
                  ? h(
                      "a",
                      {
                        class: "notify-open",
                        href: `#/study/${encodeURIComponent(n.study_instance_uid)}`,
                        on: { click: () => close() },
                      },
                      t("notify.open"),
                    )
                  : null,
                h("button", { type: "button", class: "small notify-read", on: { click: () => markRead([n.id]) } }, t("notify.markRead")),
              ),
            ),
          )
        : h("p", { class: "empty" }, t("notify.empty")),
      list.length > 1 ? h("button", { type: "button", class: "small", id: "notifications-read-all", on: { click: () => markRead(list.map((n) => n.id)) } }, t("notify.markAll")) : null,
    );
  }

  function close() {
    panel.hidden = true;
    button.setAttribute("aria-expanded", "false");
  }

  button.addEventListener("click", () => {
    if (panel.hidden) {
      panel.hidden = false;
      button.setAttribute("aria-expanded", "true");
      renderPanel();
      load();
    } else {
      close();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !panel.hidden) close();
  });

  async function load() {
    if (!currentUser() || !isLoggedIn()) return;
    try {
      items = (await apiGet("/api/v1/notifications", { unread: true, limit: 50 })) || [];
    } catch (err) {
      console.warn(err);
      return;
    }
    renderBadge();
  }

  function follow(user) {
    clearInterval(timer);
    timer = null;
    items = [];
    box.hidden = !user;
    close();
    clear(panel);
    if (!user) return;
    renderBadge();
    load();
    timer = setInterval(load, POLL_MS);
  }

  onUserChange(follow);
  onLanguageChange(renderBadge);
  onBeforeRender(() => {
    close();
    load();
  });
  follow(currentUser());
  return { reload: load };
}
