// Building DOM safely: text always goes in through textContent, never innerHTML, so patient
// names and anything else from the API can never become markup or script.

const PROPS = new Set(["value", "checked", "disabled", "selected", "hidden", "type", "name"]);

/**
 * h("button", { class: "primary", dataset: { uid }, on: { click: fn }, i18n: "key" }, child…)
 * Children: strings (as text), nodes, arrays, null/false (skipped). Attribute values are set
 * with setAttribute; "style" and "on*" attributes are refused (CSP: no inline script or style).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "on") {
      for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "class") {
      el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    } else if (key === "i18n") {
      el.dataset.i18n = value;
    } else if (key === "text") {
      el.textContent = value;
    } else if (key === "style" || key.startsWith("on")) {
      throw new Error(`h(): refusing attribute ${key}`);
    } else if (PROPS.has(key)) {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Remove every child of el. */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Replace el's children with the given ones. */
export function replaceChildren(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

/** A message box: kind is "error", "info" or "ok". role=alert for errors. */
export function messageBox(kind, text) {
  return h("div", { class: ["message", `message-${kind}`], role: kind === "error" ? "alert" : "status" }, text);
}
