// Hash router and page registry. A page is a module that calls registerRoute() at import time
// and is listed in pages/index.js. See docs/browser-app.md.
//
//   registerRoute({
//     path: "/study/:uid",          // ":name" segments become params.name (URI-decoded)
//     title: "study.title",         // i18n key for the tab title and the nav link
//     roles: ["radiologist"],       // who may open it; omit for every logged-in user
//     nav: true, order: 10,         // show a link in the top navigation, sorted by order
//     home: ["radiologist"],        // this page is "/" for these roles
//     public: false,                // true: no login needed (the login page)
//     render: async ({ root, params, query, user, signal, refresh }) => cleanup?,
//   });
//
// render() fills root (an empty <main>); it may return a cleanup function (stop timers). The
// signal is aborted when the user leaves the page: pass it to api calls so late answers are
// dropped. query is the hash's query string as URLSearchParams; setQuery() updates it in place.

import { t } from "./i18n.js";
import { clear, h, messageBox } from "./dom.js";

const routes = [];
let user = null;
let active = null; // { cleanup, controller }
let renderSeq = 0;
const userListeners = new Set();

export function registerRoute(route) {
  if (!route.path || !route.render) throw new Error("registerRoute needs path and render");
  const names = [];
  const pattern = route.path
    .split("/")
    .map((part) => {
      if (part.startsWith(":")) {
        names.push(part.slice(1));
        return "([^/]+)";
      }
      return part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    })
    .join("/");
  routes.push({ order: 100, ...route, regex: new RegExp(`^${pattern}$`), names });
}

export function getRoutes() {
  return routes.slice();
}

/** The logged-in user (from /api/v1/auth/me) or null. */
export function currentUser() {
  return user;
}

export function setCurrentUser(value) {
  user = value;
  for (const fn of userListeners) fn(user);
}

export function onUserChange(fn) {
  userListeners.add(fn);
  return () => userListeners.delete(fn);
}

/** Does the user hold a permission ("study.claim", …; the list comes from /api/v1/auth/me)? */
export function can(permission, who = user) {
  return Boolean(who && Array.isArray(who.permissions) && who.permissions.includes(permission));
}

/** May the current user open this route? */
export function allowed(route, who = user) {
  if (route.public) return true;
  if (!who) return false;
  return !route.roles || route.roles.includes(who.role);
}

/** Go to a path such as "/study/1.2.3" (optionally with a query object). */
export function navigate(path, query) {
  const qs = query ? new URLSearchParams(query).toString() : "";
  const target = `#${path}${qs ? `?${qs}` : ""}`;
  if (window.location.hash === target) render();
  else window.location.hash = target;
}

/** Replace the current hash's query without re-rendering (keeps filters across reloads). */
export function setQuery(params) {
  const { path } = parseHash();
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) search.append(key, String(v));
  }
  const qs = search.toString();
  window.history.replaceState(null, "", `#${path}${qs ? `?${qs}` : ""}`);
}

export function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/";
  const [path, qs = ""] = raw.split("?", 2);
  return { path: path || "/", query: new URLSearchParams(qs) };
}

/** Link href for a path: "#/study/1.2.3". Values are URI-encoded. */
export function href(path) {
  return `#${path}`;
}

function match(path) {
  for (const route of routes) {
    const m = route.regex.exec(path);
    if (!m) continue;
    const params = {};
    route.names.forEach((name, i) => {
      try {
        params[name] = decodeURIComponent(m[i + 1]);
      } catch {
        params[name] = m[i + 1];
      }
    });
    return { route, params };
  }
  return null;
}

/** The home path for the current user. */
export function homePath(who = user) {
  if (!who) return "/login";
  const route = routes.find((r) => r.home && r.home.includes(who.role) && allowed(r, who));
  if (route) return route.path;
  const first = routes
    .filter((r) => r.nav && allowed(r, who))
    .sort((a, b) => a.order - b.order)[0];
  return first ? first.path : "/login";
}

const beforeRenderHooks = new Set();

/** fn(route) runs before each page renders (the shell updates the navigation). */
export function onBeforeRender(fn) {
  beforeRenderHooks.add(fn);
}

function leave() {
  if (!active) return;
  const { cleanup, controller } = active;
  active = null;
  controller.abort();
  if (typeof cleanup === "function") {
    try {
      cleanup();
    } catch (err) {
      console.error(err);
    }
  }
}

/** Render the page for the current hash (also used after a language switch). */
export async function render() {
  const root = document.getElementById("app");
  const seq = ++renderSeq;
  leave();
  let { path, query } = parseHash();
  if (path === "/") {
    window.history.replaceState(null, "", `#${homePath()}`);
    ({ path, query } = parseHash());
  }
  const found = match(path);
  clear(root);
  if (!found) {
    for (const fn of beforeRenderHooks) fn(null);
    document.title = t("app.title");
    root.appendChild(messageBox("error", t("error.pageNotFound")));
    return;
  }
  const { route, params } = found;
  if (!route.public && !user) {
    const next = window.location.hash;
    window.location.hash = `#/login?${new URLSearchParams({ next }).toString()}`;
    return;
  }
  for (const fn of beforeRenderHooks) fn(route);
  document.title = route.title ? `${t(route.title)} · ${t("app.title")}` : t("app.title");
  if (!allowed(route)) {
    root.appendChild(messageBox("error", t("error.forbidden")));
    return;
  }
  const controller = new AbortController();
  active = { cleanup: null, controller };
  const refresh = () => {
    if (seq === renderSeq) render();
  };
  try {
    const cleanup = await route.render({
      root,
      params,
      query,
      user,
      signal: controller.signal,
      refresh,
    });
    if (active && active.controller === controller) active.cleanup = cleanup;
    else if (typeof cleanup === "function") cleanup();
  } catch (err) {
    if (err && err.name === "AbortError") return;
    console.error(err);
    if (seq === renderSeq) {
      root.appendChild(messageBox("error", err && err.message ? err.message : String(err)));
      root.appendChild(h("button", { type: "button", on: { click: refresh } }, t("common.retry")));
    }
  }
}

export function start() {
  window.addEventListener("hashchange", () => render());
  return render();
}
