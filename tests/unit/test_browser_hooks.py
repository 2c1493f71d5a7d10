"""The browser test hooks of ARCHITECTURE.md ("External contract") exist in the browser app.

e2e tests and outside checks find elements by these ``data-testid`` values; each must be set
somewhere in the app's source (pages build their DOM with ``h()``, so the attribute appears as
``"data-testid": "<hook>"`` or ``data-testid="<hook>"``), the clinic portal's order form
(``order-new``, ``order-submit``) included.
"""

import re
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "src" / "imaging_hub" / "viewer_static"

HOOKS = [
    "login-username",
    "login-password",
    "login-submit",
    "lang-toggle",
    "worklist-next",
    "worklist-row",
    "viewport",
    "tool-wl",
    "tool-pan",
    "tool-zoom",
    "tool-length",
    "tool-angle",
    "measurements",
    "report-template",
    "report-findings",
    "report-impression",
    "report-critical",
    "report-save",
    "report-sign",
    "report-sign-password",
    "report-sign-confirm",
    "report-status",
    "escalate",
    "consult-opinion",
    "order-new",
    "order-submit",
    "clinic-study-row",
    "report-download",
    "critical-acknowledge",
]


def _sources() -> str:
    files = [*APP.glob("*.js"), *APP.glob("pages/*.js"), APP / "index.html"]
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_contract_hook_is_set_in_the_app(hook: str) -> None:
    source = _sources()
    if hook.startswith("tool-"):
        # The viewer's tool buttons are made from one list: data-testid `tool-${key}`.
        keys = re.search(r"const TOOL_KEYS = \[([^\]]*)\]", source)
        assert keys is not None and f'"{hook[5:]}"' in keys[1], hook
        assert '"data-testid": `tool-${key}`' in source
        return
    # h("x", { "data-testid": "hook" }), data-testid="hook", setAttribute("data-testid", "hook")
    pattern = rf"""["']?data-testid["']?\s*[:=,]\s*["']{re.escape(hook)}["']"""
    assert re.search(pattern, source), f"no element carries data-testid={hook!r}"
