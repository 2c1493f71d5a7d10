// Every page module of the browser app. A page registers its route(s) and strings when imported;
// add one import line here for a new page (see docs/browser-app.md).
import "./login.js";
import "./worklist.js";
import "./clinic.js";
import "./study.js";
import "./gateways.js";
import "./admin_users.js";
import "./dashboard.js";
import "./audit.js";
