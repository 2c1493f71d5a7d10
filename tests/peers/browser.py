"""Debian's chromium driven by Playwright, for the browser app's end-to-end tests.

- ``browser`` (session scope): one headless chromium for the whole run (``/usr/bin/chromium``,
  launched as root with ``--no-sandbox``). Playwright gives every launch a fresh temporary
  profile (user-data dir), removed when the browser closes. A missing chromium is a failure with
  the install command, never a skip.
- ``open_page`` (function scope): a factory for a new browser context + page (1366x768, a
  locale, nothing shared with other tests: sessionStorage, localStorage and cookies are per
  context). Each page records JavaScript dialogs, uncaught page errors, console errors and CSP
  violations, so a test can assert that hostile data executed nothing.
"""

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1366, "height": 768}

# Runs before any page script (injected by the DevTools protocol, so CSP does not apply to it):
# collects CSP violations the page reports.
_RECORD_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@dataclass
class BrowserPage:
    """A page plus everything it reported; ``problems()`` lists what should never happen."""

    page: Page
    context: BrowserContext
    dialogs: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        violations: list[str] = self.page.evaluate("window.__cspViolations || []")
        return violations

    def problems(self) -> list[str]:
        return [
            *(f"dialog: {d}" for d in self.dialogs),
            *(f"page error: {e}" for e in self.page_errors),
            *(f"csp: {v}" for v in self.csp_violations()),
        ]


def launch_chromium(playwright: Any) -> Browser:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Debian chromium is missing ({CHROMIUM} not found): the browser tests need it. "
            "Install it with `apt-get install chromium fonts-wqy-microhei` "
            "(or `make peers`).",
            pytrace=False,
        )
    browser: Browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
    )
    return browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


OpenPage = Callable[..., BrowserPage]


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    contexts: list[BrowserContext] = []

    def factory(base_url: str, *, locale: str = "zh-CN") -> BrowserPage:
        context = browser.new_context(
            base_url=base_url, viewport=VIEWPORT, locale=locale, timezone_id="Asia/Shanghai"
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        context.add_init_script(_RECORD_CSP)
        page = context.new_page()
        result = BrowserPage(page=page, context=context)

        def on_dialog(dialog: Dialog) -> None:
            result.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda err: result.page_errors.append(str(err)))
        page.on(
            "console",
            lambda msg: result.console_errors.append(msg.text) if msg.type == "error" else None,
        )
        return result

    try:
        yield factory
    finally:
        for context in contexts:
            context.close()
