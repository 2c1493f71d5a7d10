// The one place that talks HTTP to the hub and the one place that knows how the browser is
// authenticated: a browser session (POST /api/v1/auth/session) held in an HttpOnly,
// SameSite=Strict cookie that JavaScript never sees, plus a CSRF token kept in memory and sent in
// the X-CSRF-Token header of every state-changing request (docs/security.md). After a reload the
// CSRF token is fetched again from GET /api/v1/auth/session. Callers use apiGet/apiPost/apiBlob
// and never handle credentials. Images load with the cookie too, but pages still fetch them with
// apiBlob so that errors are handled in one place.

import { problemMessage } from "./errors.js";
import { t } from "./i18n.js";

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
// 401 answers whose code says the session is fine (POST /api/v1/reports/{id}/sign, docs/reports.md).
const NOT_SESSION_401 = new Set(["signing_password_wrong"]);
let csrfToken = null; // non-null while we believe a session is active

/** An HTTP or network failure with a message already in the user's language (error.message). */
export class ApiError extends Error {
  constructor({ status, title, detail, code, message, errors }) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0 for a network failure
    this.title = title || "";
    this.detail = detail || ""; // the hub's English detail (for logs and the English screen)
    this.code = code || ""; // the hub's stable error code (docs/errors.md)
    this.errors = errors || []; // a 422's per-field errors: [{ field, message }]
  }
}

/** True when this page holds a session (it may still have ended on the server). */
export function isLoggedIn() {
  return csrfToken !== null;
}

/**
 * Ask the hub whether the browser has a session (after a reload); true when it has.
 * GET /api/v1/auth/session never answers 401.
 */
export async function restoreSession() {
  try {
    const response = await fetch("/api/v1/auth/session", { credentials: "same-origin" });
    if (!response.ok) return false;
    const body = await response.json();
    csrfToken = body.authenticated && body.csrf_token ? body.csrf_token : null;
  } catch {
    csrfToken = null;
  }
  return csrfToken !== null;
}

function authHeaders(method) {
  return csrfToken && !SAFE_METHODS.has(method) ? { "X-CSRF-Token": csrfToken } : {};
}

const unauthorizedHandlers = new Set();

/** Call fn() when the hub answers 401 to an authenticated request (the session is over). */
export function onUnauthorized(fn) {
  unauthorizedHandlers.add(fn);
  return () => unauthorizedHandlers.delete(fn);
}

/** Query string from an object; arrays repeat the key, null/undefined/"" are left out. */
export function buildQuery(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) {
      for (const v of value) search.append(key, String(v));
    } else {
      search.append(key, String(value));
    }
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

async function errorFrom(response) {
  let title = response.statusText;
  let detail = "";
  let code = "";
  let errors = [];
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      const body = await response.json();
      title = typeof body.title === "string" ? body.title : title;
      if (typeof body.detail === "string") detail = body.detail;
      else if (body.detail !== undefined) detail = JSON.stringify(body.detail);
      if (typeof body.code === "string") code = body.code;
      if (Array.isArray(body.errors)) errors = body.errors.filter((e) => e && typeof e === "object");
    } catch {
      // A broken error body: keep the status line.
    }
  }
  return new ApiError({
    status: response.status,
    title,
    detail,
    code,
    errors,
    message: problemMessage(response.status, code, detail),
  });
}

/**
 * fetch() with the caller's credentials. Throws ApiError for a network failure or a non-2xx
 * answer; a 401 also ends the session (handlers registered with onUnauthorized run).
 * options: { method, params, body (FormData | URLSearchParams | object -> JSON), headers, signal,
 *            auth (default true) }
 */
export async function request(path, options = {}) {
  const { method = "GET", params, body, headers = {}, signal, auth = true } = options;
  const init = { method, headers: { ...headers }, signal, credentials: "same-origin" };
  if (auth) Object.assign(init.headers, authHeaders(method));
  if (body !== undefined) {
    if (body instanceof FormData || body instanceof URLSearchParams || body instanceof Blob) {
      init.body = body;
    } else {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
  }
  let response;
  try {
    response = await fetch(path + buildQuery(params), init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError({ status: 0, message: t("error.network") });
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    // A wrong signing password is a 401 about that password, not about the session.
    if (response.status === 401 && auth && csrfToken !== null && !NOT_SESSION_401.has(error.code)) {
      csrfToken = null;
      for (const fn of unauthorizedHandlers) fn(error);
    }
    throw error;
  }
  return response;
}

/** GET path and parse JSON (params: query object). */
export async function apiGet(path, params, options = {}) {
  const response = await request(path, { ...options, params });
  return response.status === 204 ? null : response.json();
}

/** POST a JSON body (or FormData) and parse the JSON answer, if any. */
export async function apiPost(path, body, options = {}) {
  const response = await request(path, { ...options, method: "POST", body });
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : null;
}

/** GET a binary resource (an image) as a Blob: <img src> cannot carry an Authorization header. */
export async function apiBlob(path, params, options = {}) {
  const response = await request(path, { ...options, params });
  return response.blob();
}

/** Start a browser session with the OAuth2 password form; throws ApiError (localised). */
export async function login(username, password) {
  const form = new URLSearchParams({ username, password });
  let response;
  try {
    response = await fetch("/api/v1/auth/session", {
      method: "POST",
      body: form,
      credentials: "same-origin",
    });
  } catch {
    throw new ApiError({ status: 0, message: t("error.network") });
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    // The hub answers 401 for a wrong password and for a locked or disabled account (the code
    // says which), 429 when one address failed too often.
    if (error.code === "account_locked") error.message = t("login.locked");
    else if (error.code === "account_disabled") error.message = t("error.code.account_disabled");
    else if (response.status === 401) error.message = t("login.failed");
    else if (response.status === 429) error.message = t("login.throttled");
    throw error;
  }
  const body = await response.json();
  csrfToken = body.csrf_token;
}

/** End the session on the hub (revokes it, clears the cookies) and forget the CSRF token. */
export async function logout() {
  try {
    await request("/api/v1/auth/session", { method: "DELETE" });
  } catch (err) {
    // Already ended (401) or the hub is unreachable: the page forgets the session either way.
    console.warn(err);
  } finally {
    csrfToken = null;
  }
}

/** The logged-in user: { username, display_name, role, institution, institution_name }. */
export function fetchMe() {
  return apiGet("/api/v1/auth/me");
}
