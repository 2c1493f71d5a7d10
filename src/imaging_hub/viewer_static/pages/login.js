// Login page: OAuth2 password form -> api.login(); then the user's home page (or ?next=).

import { addStrings, t } from "../i18n.js";
import { fetchMe, login } from "../api.js";
import { h, messageBox, replaceChildren } from "../dom.js";
import { homePath, registerRoute, setCurrentUser } from "../router.js";

addStrings({
  "zh-CN": {
    "login.title": "登录",
    "login.heading": "登录影像中心",
    "login.username": "用户名",
    "login.password": "密码",
    "login.submit": "登录",
    "login.busy": "正在登录…",
    "login.failed": "用户名或密码错误。",
    "login.locked": "账号已被暂时锁定，请稍后再试或联系管理员。",
    "login.throttled": "登录失败次数过多，请稍后再试。",
    "login.expired": "登录已过期，请重新登录。",
    "login.required": "请输入用户名和密码。",
  },
  en: {
    "login.title": "Log in",
    "login.heading": "Log in to the Imaging Hub",
    "login.username": "User name",
    "login.password": "Password",
    "login.submit": "Log in",
    "login.busy": "Logging in…",
    "login.failed": "Wrong user name or password.",
    "login.locked": "This account is temporarily locked. Try again later or ask an administrator.",
    "login.throttled": "Too many failed logins. Please try again later.",
    "login.expired": "Your session has expired. Please log in again.",
    "login.required": "Enter your user name and password.",
  },
});

function safeNext(next) {
  return typeof next === "string" && /^#\/[^/]/.test(next) && !next.startsWith("#/login")
    ? next
    : null;
}

registerRoute({
  path: "/login",
  title: "login.title",
  public: true,
  render({ root, query }) {
    const status = h("div", { class: "login-status", id: "login-status", "aria-live": "polite" });
    if (query.get("expired")) status.appendChild(messageBox("info", t("login.expired")));
    const username = h("input", {
      id: "login-username",
      "data-testid": "login-username",
      name: "username",
      autocomplete: "username",
      required: true,
      autocapitalize: "none",
      spellcheck: "false",
    });
    const password = h("input", {
      id: "login-password",
      "data-testid": "login-password",
      name: "password",
      type: "password",
      autocomplete: "current-password",
      required: true,
    });
    const submit = h("button", { type: "submit", class: "primary", id: "login-submit", "data-testid": "login-submit" }, t("login.submit"));
    const form = h(
      "form",
      { class: "login-form", id: "login-form", novalidate: true },
      h("h1", {}, t("login.heading")),
      status,
      h("label", { for: "login-username" }, t("login.username")),
      username,
      h("label", { for: "login-password" }, t("login.password")),
      password,
      submit,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!username.value.trim() || !password.value) {
        replaceChildren(status, messageBox("error", t("login.required")));
        return;
      }
      submit.disabled = true;
      submit.textContent = t("login.busy");
      try {
        await login(username.value.trim(), password.value);
        const me = await fetchMe();
        setCurrentUser(me);
        password.value = "";
        window.location.hash = safeNext(query.get("next")) || `#${homePath(me)}`;
      } catch (err) {
        replaceChildren(status, messageBox("error", err.message));
        password.value = "";
        password.focus();
      } finally {
        submit.disabled = false;
        submit.textContent = t("login.submit");
      }
    });
    root.appendChild(h("section", { class: "login-page" }, form));
    username.focus();
  },
});
