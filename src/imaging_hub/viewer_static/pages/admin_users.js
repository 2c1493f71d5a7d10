// Admin: user accounts (#/admin/users) over /api/v1/admin/users — list (institution by name),
// create, disable/enable (enabling also clears a lockout), reset password, change role,
// institution and display name; for radiologists their reading eligibility
// (/api/v1/admin/users/{username}/eligibility) and on-duty shifts (/api/v1/admin/shifts).
// Every refusal is shown in the user's language by the hub's error code (errors.js).

import { addStrings, formatDateTime, t } from "../i18n.js";
import { apiGet, apiPost, request } from "../api.js";
import { h, messageBox, replaceChildren } from "../dom.js";
import { institutionLabel, loadInstitutions } from "../institutions.js";
import { registerRoute } from "../router.js";

addStrings({
  "zh-CN": {
    "adminUsers.title": "用户",
    "adminUsers.heading": "用户管理",
    "adminUsers.new": "新建用户",
    "adminUsers.create": "创建用户",
    "adminUsers.cancel": "取消",
    "adminUsers.username": "用户名",
    "adminUsers.displayName": "姓名",
    "adminUsers.role": "角色",
    "adminUsers.institution": "所属机构",
    "adminUsers.password": "初始密码",
    "adminUsers.passwordHint": "至少 10 个字符，且不能与用户名相同。请通过其他途径告知用户。",
    "adminUsers.active": "启用",
    "adminUsers.locked": "锁定",
    "adminUsers.onDuty": "值班",
    "adminUsers.actions": "操作",
    "adminUsers.yes": "是",
    "adminUsers.no": "否",
    "adminUsers.lockedUntil": "锁定至 {time}",
    "adminUsers.edit": "编辑",
    "adminUsers.disable": "停用",
    "adminUsers.enable": "启用",
    "adminUsers.unlock": "解锁",
    "adminUsers.created": "已创建用户 {username}。",
    "adminUsers.saved": "已保存 {username} 的修改。",
    "adminUsers.disabled": "已停用 {username}：其登录立即失效。",
    "adminUsers.enabled": "已启用 {username}。",
    "adminUsers.editing": "编辑用户：{username}",
    "adminUsers.save": "保存",
    "adminUsers.resetPassword": "重置密码",
    "adminUsers.newPassword": "新密码",
    "adminUsers.passwordReset": "已重置 {username} 的密码，其所有登录已结束。",
    "adminUsers.eligibility": "阅片资格",
    "adminUsers.eligibilityHint": "留空表示全部。检查类型和部位用逗号分隔，例如 CT, DX 或 CHEST, HEAD。",
    "adminUsers.modalities": "检查类型",
    "adminUsers.bodyParts": "检查部位",
    "adminUsers.clinics": "卫生院（不选表示全部）",
    "adminUsers.saveEligibility": "保存阅片资格",
    "adminUsers.eligibilitySaved": "已保存 {username} 的阅片资格。",
    "adminUsers.shifts": "值班安排",
    "adminUsers.noShifts": "没有即将到来的值班。",
    "adminUsers.shiftStart": "开始",
    "adminUsers.shiftEnd": "结束",
    "adminUsers.addShift": "添加值班",
    "adminUsers.removeShift": "删除",
    "adminUsers.shiftAdded": "已添加值班。",
    "adminUsers.shiftRemoved": "已删除值班。",
    "adminUsers.shiftInvalid": "请填写有效的开始和结束时间。",
    "adminUsers.empty": "还没有用户。",
    "adminUsers.close": "关闭",
  },
  en: {
    "adminUsers.title": "Users",
    "adminUsers.heading": "User accounts",
    "adminUsers.new": "New user",
    "adminUsers.create": "Create user",
    "adminUsers.cancel": "Cancel",
    "adminUsers.username": "Username",
    "adminUsers.displayName": "Display name",
    "adminUsers.role": "Role",
    "adminUsers.institution": "Institution",
    "adminUsers.password": "Initial password",
    "adminUsers.passwordHint": "At least 10 characters, not the username. Tell the user out of band.",
    "adminUsers.active": "Active",
    "adminUsers.locked": "Locked",
    "adminUsers.onDuty": "On duty",
    "adminUsers.actions": "Actions",
    "adminUsers.yes": "Yes",
    "adminUsers.no": "No",
    "adminUsers.lockedUntil": "Locked until {time}",
    "adminUsers.edit": "Edit",
    "adminUsers.disable": "Disable",
    "adminUsers.enable": "Enable",
    "adminUsers.unlock": "Unlock",
    "adminUsers.created": "User {username} created.",
    "adminUsers.saved": "Changes to {username} saved.",
    "adminUsers.disabled": "{username} disabled: their sessions end at once.",
    "adminUsers.enabled": "{username} enabled.",
    "adminUsers.editing": "Edit user: {username}",
    "adminUsers.save": "Save",
    "adminUsers.resetPassword": "Reset password",
    "adminUsers.newPassword": "New password",
    "adminUsers.passwordReset": "Password of {username} reset; all their sessions ended.",
    "adminUsers.eligibility": "Reading eligibility",
    "adminUsers.eligibilityHint": "Empty means all. Modalities and body parts separated by commas, e.g. CT, DX or CHEST, HEAD.",
    "adminUsers.modalities": "Modalities",
    "adminUsers.bodyParts": "Body parts",
    "adminUsers.clinics": "Clinics (none ticked means all)",
    "adminUsers.saveEligibility": "Save eligibility",
    "adminUsers.eligibilitySaved": "Eligibility of {username} saved.",
    "adminUsers.shifts": "On-duty shifts",
    "adminUsers.noShifts": "No upcoming shifts.",
    "adminUsers.shiftStart": "Starts",
    "adminUsers.shiftEnd": "Ends",
    "adminUsers.addShift": "Add shift",
    "adminUsers.removeShift": "Remove",
    "adminUsers.shiftAdded": "Shift added.",
    "adminUsers.shiftRemoved": "Shift removed.",
    "adminUsers.shiftInvalid": "Enter a valid start and end time.",
    "adminUsers.empty": "No users yet.",
    "adminUsers.close": "Close",
  },
});

const ROLES = ["radiologist", "consultant", "clinic_staff", "admin"];

function isLocked(user) {
  return Boolean(user.locked_until && new Date(user.locked_until).getTime() > Date.now());
}

function field(id, label, control, hint) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("small", { class: "hint" }, hint) : null);
}

function roleSelect(id, value) {
  return h("select", { id, name: "role" }, ROLES.map((r) => h("option", { value: r, selected: r === value }, t(`role.${r}`))));
}

function institutionSelect(id, institutions, value) {
  const list = [...institutions.values()].sort((a, b) => a.code.localeCompare(b.code));
  return h(
    "select",
    { id, name: "institution" },
    list.map((i) => h("option", { value: i.code, selected: i.code === value, title: i.code }, i.name)),
  );
}

function splitCodes(text) {
  return text
    .split(/[,，\s]+/)
    .map((s) => s.trim().toUpperCase())
    .filter(Boolean);
}

/** datetime-local value -> ISO 8601 with an offset (UTC), or null. */
function toIso(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

function renderAdminUsers({ root, signal }) {
  const notice = h("div", { id: "admin-users-notice", "data-testid": "admin-users-notice", "aria-live": "polite" });
  const formSlot = h("div", { class: "admin-form-slot" });
  const tableWrap = h("div", { class: "table-wrap" });
  const editSlot = h("div", { class: "admin-edit-slot" });
  let institutions = new Map();
  let users = [];
  let editing = null; // username

  const ok = (text) => replaceChildren(notice, messageBox("ok", text));
  const fail = (err) => {
    if (err && err.name === "AbortError") return;
    const box = messageBox("error", err.message);
    if (err.code) box.dataset.code = err.code;
    replaceChildren(notice, box);
  };

  async function call(fn, message) {
    try {
      await fn();
      if (message) ok(message);
      await load();
      return true;
    } catch (err) {
      fail(err);
      return false;
    }
  }

  function openCreate() {
    const username = h("input", { id: "new-username", name: "username", required: true, maxlength: "64", autocomplete: "off", spellcheck: "false" });
    const display = h("input", { id: "new-display", name: "display_name", maxlength: "200", autocomplete: "off" });
    const role = roleSelect("new-role", "radiologist");
    const inst = institutionSelect("new-institution", institutions, "hub");
    const password = h("input", { id: "new-password", name: "password", type: "password", required: true, minlength: "10", maxlength: "256", autocomplete: "new-password" });
    const form = h(
      "form",
      { class: "admin-form", id: "admin-user-form", "aria-label": t("adminUsers.new") },
      h("h2", {}, t("adminUsers.new")),
      h("div", { class: "admin-form-grid" },
        field("new-username", t("adminUsers.username"), username),
        field("new-display", t("adminUsers.displayName"), display),
        field("new-role", t("adminUsers.role"), role),
        field("new-institution", t("adminUsers.institution"), inst),
        field("new-password", t("adminUsers.password"), password, t("adminUsers.passwordHint")),
      ),
      h("div", { class: "admin-form-buttons" },
        h("button", { type: "submit", class: "primary", "data-testid": "admin-user-submit" }, t("adminUsers.create")),
        h("button", { type: "button", "data-testid": "admin-user-cancel", on: { click: () => replaceChildren(formSlot) } }, t("adminUsers.cancel")),
      ),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const name = username.value.trim();
      const done = await call(
        () => apiPost("/api/v1/admin/users", {
          username: name,
          display_name: display.value.trim(),
          role: role.value,
          institution: inst.value,
          password: password.value,
        }, { signal }),
        t("adminUsers.created", { username: name }),
      );
      if (done) replaceChildren(formSlot);
    });
    replaceChildren(formSlot, form);
    username.focus();
  }

  function rowActions(u) {
    const path = `/api/v1/admin/users/${encodeURIComponent(u.username)}`;
    const buttons = [
      h("button", { type: "button", class: "row-action", "data-testid": "admin-user-edit", on: { click: () => openEdit(u.username) } }, t("adminUsers.edit")),
    ];
    if (u.is_active) {
      buttons.push(h("button", {
        type: "button",
        class: "row-action",
        "data-testid": "admin-user-disable",
        on: { click: () => call(() => apiPost(`${path}/disable`, undefined, { signal }), t("adminUsers.disabled", { username: u.username })) },
      }, t("adminUsers.disable")));
    }
    if (!u.is_active || isLocked(u)) {
      buttons.push(h("button", {
        type: "button",
        class: "row-action",
        "data-testid": "admin-user-enable",
        on: { click: () => call(() => apiPost(`${path}/enable`, undefined, { signal }), t("adminUsers.enabled", { username: u.username })) },
      }, u.is_active ? t("adminUsers.unlock") : t("adminUsers.enable")));
    }
    return buttons;
  }

  function renderTable() {
    const columns = [
      ["username", t("adminUsers.username"), (u) => h("code", {}, u.username)],
      ["display", t("adminUsers.displayName"), (u) => u.display_name],
      ["role", t("adminUsers.role"), (u) => t(`role.${u.role}`)],
      ["institution", t("adminUsers.institution"), (u) => institutionLabel(institutions, u.institution)],
      ["active", t("adminUsers.active"), (u) =>
        h("span", { class: ["chip", u.is_active ? "user-active" : "user-disabled"] }, u.is_active ? t("adminUsers.yes") : t("adminUsers.no"))],
      ["locked", t("adminUsers.locked"), (u) =>
        isLocked(u) ? h("span", { class: "overdue", title: t("adminUsers.lockedUntil", { time: formatDateTime(u.locked_until) }) }, t("adminUsers.yes")) : t("adminUsers.no")],
      ["duty", t("adminUsers.onDuty"), (u) => (u.role === "radiologist" ? (u.on_duty ? t("adminUsers.yes") : t("adminUsers.no")) : "")],
      ["actions", t("adminUsers.actions"), rowActions],
    ];
    if (!users.length) {
      replaceChildren(tableWrap, h("p", { class: "empty" }, t("adminUsers.empty")));
      return;
    }
    replaceChildren(
      tableWrap,
      h(
        "table",
        { class: "data-table admin-users", id: "admin-users-table" },
        h("thead", {}, h("tr", {}, columns.map(([key, label]) => h("th", { scope: "col", class: `col-${key}` }, label)))),
        h("tbody", {}, users.map((u) =>
          h("tr", {
            "data-testid": "admin-user-row",
            class: [u.is_active ? null : "row-disabled", u.username === editing ? "row-selected" : null],
            dataset: { username: u.username },
          }, columns.map(([key, , cell]) => h("td", { class: `col-${key}` }, cell(u)))),
        )),
      ),
    );
  }

  async function openEdit(username) {
    editing = username;
    renderTable();
    const u = users.find((x) => x.username === username);
    if (!u) {
      replaceChildren(editSlot);
      return;
    }
    const path = `/api/v1/admin/users/${encodeURIComponent(username)}`;
    const display = h("input", { id: "edit-display", name: "display_name", maxlength: "200", value: u.display_name });
    const role = roleSelect("edit-role", u.role);
    const inst = institutionSelect("edit-institution", institutions, u.institution);
    const profile = h(
      "form",
      { class: "admin-form", id: "admin-user-edit-form" },
      h("div", { class: "admin-form-grid" },
        field("edit-display", t("adminUsers.displayName"), display),
        field("edit-role", t("adminUsers.role"), role),
        field("edit-institution", t("adminUsers.institution"), inst),
      ),
      h("div", { class: "admin-form-buttons" },
        h("button", { type: "submit", class: "primary", "data-testid": "admin-user-save" }, t("adminUsers.save"))),
    );
    profile.addEventListener("submit", async (event) => {
      event.preventDefault();
      const patch = {};
      if (display.value.trim() !== u.display_name) patch.display_name = display.value.trim();
      if (role.value !== u.role) patch.role = role.value;
      if (inst.value !== u.institution) patch.institution = inst.value;
      const done = await call(
        () => request(path, { method: "PATCH", body: patch, signal }),
        t("adminUsers.saved", { username }),
      );
      if (!done) return;
      // A new role changes which sections the panel has (reading duty): build it again. Otherwise
      // keep the panel, so what the admin is typing in its other forms (a new password) stays.
      if (patch.role) openEdit(username);
      else Object.assign(u, users.find((x) => x.username === username) || {});
    });

    const password = h("input", { id: "reset-password", name: "password", type: "password", minlength: "10", maxlength: "256", autocomplete: "new-password", required: true });
    const reset = h(
      "form",
      { class: "admin-form", id: "admin-user-password-form" },
      h("h3", {}, t("adminUsers.resetPassword")),
      h("div", { class: "admin-form-grid" }, field("reset-password", t("adminUsers.newPassword"), password, t("adminUsers.passwordHint"))),
      h("div", { class: "admin-form-buttons" },
        h("button", { type: "submit", "data-testid": "admin-user-password" }, t("adminUsers.resetPassword"))),
    );
    reset.addEventListener("submit", async (event) => {
      event.preventDefault();
      const done = await call(
        () => request(`${path}/password`, { method: "POST", body: { password: password.value }, signal }),
        t("adminUsers.passwordReset", { username }),
      );
      if (done) password.value = "";
    });

    const duty = u.role === "radiologist" ? await dutySection(username) : null;
    if (editing !== username) return;
    replaceChildren(
      editSlot,
      h("section", { class: "admin-edit", id: "admin-user-edit", "data-username": username },
        h("div", { class: "page-head" },
          h("h2", {}, t("adminUsers.editing", { username })),
          h("button", { type: "button", class: "link-button", "data-testid": "admin-user-close", on: { click: () => { editing = null; replaceChildren(editSlot); renderTable(); } } }, t("adminUsers.close"))),
        profile,
        reset,
        duty,
      ),
    );
  }

  async function dutySection(username) {
    let eligibility;
    let shifts;
    try {
      [eligibility, shifts] = await Promise.all([
        apiGet(`/api/v1/admin/users/${encodeURIComponent(username)}/eligibility`, undefined, { signal }),
        apiGet("/api/v1/admin/shifts", { username, ending_after: new Date().toISOString() }, { signal }),
      ]);
    } catch (err) {
      fail(err);
      return null;
    }
    const modalities = h("input", { id: "elig-modalities", value: eligibility.modalities.join(", "), autocomplete: "off", spellcheck: "false" });
    const bodyParts = h("input", { id: "elig-body-parts", value: eligibility.body_parts.join(", "), autocomplete: "off", spellcheck: "false" });
    const clinics = [...institutions.values()]
      .filter((i) => i.level === "township" || i.level === "village" || eligibility.clinics.includes(i.code))
      .sort((a, b) => a.code.localeCompare(b.code));
    const boxes = clinics.map((i) =>
      h("label", { class: "check", title: i.code },
        h("input", { type: "checkbox", name: "clinic", value: i.code, checked: eligibility.clinics.includes(i.code), "data-testid": "admin-eligibility-clinic" }),
        i.name));
    const form = h(
      "form",
      { class: "admin-form", id: "admin-eligibility-form" },
      h("h3", {}, t("adminUsers.eligibility")),
      h("p", { class: "hint" }, t("adminUsers.eligibilityHint")),
      h("div", { class: "admin-form-grid" },
        field("elig-modalities", t("adminUsers.modalities"), modalities),
        field("elig-body-parts", t("adminUsers.bodyParts"), bodyParts)),
      h("fieldset", { class: "check-group" }, h("legend", {}, t("adminUsers.clinics")), boxes),
      h("div", { class: "admin-form-buttons" },
        h("button", { type: "submit", "data-testid": "admin-eligibility-save" }, t("adminUsers.saveEligibility"))),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = {
        modalities: splitCodes(modalities.value),
        body_parts: splitCodes(bodyParts.value),
        clinics: boxes.map((b) => b.querySelector("input")).filter((c) => c.checked).map((c) => c.value),
      };
      await call(
        () => request(`/api/v1/admin/users/${encodeURIComponent(username)}/eligibility`, { method: "PUT", body, signal }),
        t("adminUsers.eligibilitySaved", { username }),
      );
    });

    const start = h("input", { id: "shift-start", type: "datetime-local", "data-testid": "admin-shift-start" });
    const end = h("input", { id: "shift-end", type: "datetime-local", "data-testid": "admin-shift-end" });
    const list = shifts.length
      ? h("table", { class: "data-table", id: "admin-shifts" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("adminUsers.shiftStart")), h("th", { scope: "col" }, t("adminUsers.shiftEnd")), h("th", { scope: "col" }, t("adminUsers.actions")))),
        h("tbody", {}, shifts.map((s) => h("tr", { "data-testid": "admin-shift-row", dataset: { shiftId: String(s.id) } },
          h("td", {}, formatDateTime(s.starts_at)),
          h("td", {}, formatDateTime(s.ends_at)),
          h("td", {}, h("button", {
            type: "button",
            class: "row-action",
            "data-testid": "admin-shift-remove",
            on: {
              click: async () => {
                if (await call(() => request(`/api/v1/admin/shifts/${s.id}`, { method: "DELETE", signal }), t("adminUsers.shiftRemoved"))) openEdit(username);
              },
            },
          }, t("adminUsers.removeShift")))))))
      : h("p", { class: "empty" }, t("adminUsers.noShifts"));
    const add = h(
      "form",
      { class: "admin-form admin-inline", id: "admin-shift-form" },
      field("shift-start", t("adminUsers.shiftStart"), start),
      field("shift-end", t("adminUsers.shiftEnd"), end),
      h("button", { type: "submit", "data-testid": "admin-shift-add" }, t("adminUsers.addShift")),
    );
    add.addEventListener("submit", async (event) => {
      event.preventDefault();
      const startsAt = toIso(start.value);
      const endsAt = toIso(end.value);
      if (!startsAt || !endsAt) {
        replaceChildren(notice, messageBox("error", t("adminUsers.shiftInvalid")));
        return;
      }
      if (await call(() => apiPost("/api/v1/admin/shifts", { username, starts_at: startsAt, ends_at: endsAt }, { signal }), t("adminUsers.shiftAdded"))) {
        openEdit(username);
      }
    });
    return h("div", { class: "admin-duty" }, form, h("h3", {}, t("adminUsers.shifts")), list, add);
  }

  async function load() {
    const [insts, list] = await Promise.all([
      loadInstitutions(),
      apiGet("/api/v1/admin/users", undefined, { signal }),
    ]);
    institutions = insts;
    users = list;
    renderTable();
  }

  root.appendChild(
    h("section", { class: "admin-page admin-users-page" },
      h("div", { class: "page-head" },
        h("h1", {}, t("adminUsers.heading")),
        h("button", { type: "button", class: "primary", id: "admin-user-new", "data-testid": "admin-user-new", on: { click: openCreate } }, t("adminUsers.new"))),
      notice,
      formSlot,
      tableWrap,
      editSlot,
    ),
  );
  return load().then(() => undefined);
}

registerRoute({
  path: "/admin/users",
  title: "adminUsers.title",
  roles: ["admin"],
  nav: true,
  order: 45,
  render: renderAdminUsers,
});
