// Institution names by code, from GET /api/v1/institutions (every signed-in user may read it).
// Fetched once per page load and kept; pages show clinics by name, with the code as a tooltip.

import { apiGet } from "./api.js";
import { h } from "./dom.js";

let cache = null; // Promise<Map<code, {code, name, level, parent}>>
let known = new Map(); // the last list loaded, for code that cannot wait

/** The institutions by code (one request per page load; a failure is retried next call). */
export function loadInstitutions() {
  if (!cache) {
    cache = apiGet("/api/v1/institutions")
      .then((list) => {
        known = new Map((Array.isArray(list) ? list : []).map((i) => [i.code, i]));
        return known;
      })
      .catch((err) => {
        cache = null;
        throw err;
      });
  }
  return cache;
}

/** Forget the cached list (after an administrator changed institutions, or at logout). */
export function forgetInstitutions() {
  cache = null;
}

/** The name for a code once loadInstitutions() has answered (else the code), without waiting. */
export function knownInstitutionName(code) {
  return institutionName(known, code);
}

/** The name for a code from a loaded map; the code itself when unknown. */
export function institutionName(map, code) {
  const found = map && code ? map.get(code) : null;
  return found && found.name ? found.name : code || "";
}

/** A span showing the institution's name, the code as its tooltip and data-code. */
export function institutionLabel(map, code, name) {
  return h("span", { class: "inst-name", title: code || null, "data-code": code || null }, name || institutionName(map, code));
}
