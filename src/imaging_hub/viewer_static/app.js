// Entry point: builds the shell (navigation, user, language switch, logout), then starts the
// router. Pages register themselves (see pages/index.js and router.js).

import { applyI18n, getLanguage, onLanguageChange, setLanguage, t } from "./i18n.js";
import { fetchMe, logout, onUnauthorized, restoreSession } from "./api.js";
import { clear, h } from "./dom.js";
import {
  allowed,
  currentUser,
  getRoutes,
  navigate,
  onBeforeRender,
  onUserChange,
  parseHash,
  render,
  setCurrentUser,
  start,
} from "./router.js";
import { mountNotifications } from "./notifications.js";
import "./pages/index.js";

let activePath = null;

function renderNav() {
  const nav = document.getElementById("nav");
  clear(nav);
  const user = currentUser();
  if (!user) return;
  const links = getRoutes()
    .filter((r) => r.nav && allowed(r, user))
    .sort((a, b) => a.order - b.order);
  for (const route of links) {
    const current = activePath === route.path;
    nav.appendChild(
      h(
        "a",
        {
          href: `#${route.path}`,
          class: current ? "active" : null,
          "aria-current": current ? "page" : null,
        },
        t(route.title),
      ),
    );
  }
}

function renderSession() {
  const box = document.getElementById("session");
  clear(box);
  const user = currentUser();
  if (!user) return;
  box.appendChild(
    h(
      "span",
      { class: "who", title: user.username },
      h("span", { class: "who-name", id: "session-user" }, user.display_name || user.username),
      h("span", { class: "who-role", id: "session-role" }, t(`role.${user.role}`)),
      h("span", { class: "who-inst", id: "session-institution" }, user.institution_name),
    ),
  );
  box.appendChild(
    h(
      "button",
      {
        type: "button",
        id: "logout",
        class: "link-button",
        on: {
          click: async () => {
            await logout();
            setCurrentUser(null);
            navigate("/login");
          },
        },
      },
      t("nav.logout"),
    ),
  );
}

function renderShell() {
  renderNav();
  renderSession();
}

async function loadUser() {
  if (!(await restoreSession())) {
    setCurrentUser(null);
    return;
  }
  try {
    setCurrentUser(await fetchMe());
  } catch (err) {
    // A 401 already cleared the token; anything else: show the login page with the reason.
    console.error(err);
    setCurrentUser(null);
  }
}

function init() {
  document.documentElement.lang = getLanguage();
  applyI18n(document);
  document.getElementById("lang-switch").addEventListener("click", () => {
    setLanguage(getLanguage() === "zh-CN" ? "en" : "zh-CN");
  });
  onLanguageChange(() => {
    renderShell();
    render();
  });
  onUserChange(renderShell);
  mountNotifications(document.getElementById("topbar"));
  onBeforeRender((route) => {
    activePath = route ? route.path : null;
    renderNav();
  });
  onUnauthorized(() => {
    setCurrentUser(null);
    const { path } = parseHash();
    if (path !== "/login") {
      const next = window.location.hash;
      navigate("/login", { next, expired: "1" });
    }
  });
  loadUser().then(start);
}

init();

