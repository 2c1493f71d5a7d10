"""The gateway's LAN page in chromium, with the WAN down: clinic staff sign in, find the critical
report (standing out), download it, acknowledge it, switch to English, sign out.

The report is signed by the real hub (a process), pulled by the gateway's report side, then
the hub is stopped; the LAN page (uvicorn in a thread, as in ``gateway serve``) serves from the
gateway's store alone. The patient's name is hostile markup: it must show as text and run
nothing (no dialog, no page error, no CSP violation).
"""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from imaging_hub.dicom_gateway.lan_page import LanPage, LanPageServer
from tests.integration.test_gateway_reports import (
    Gateway,
    hub_pdf,
    ingest_study,
    open_gateway,
    pull_until,
    sign_report,
)
from tests.peers.browser import OpenPage
from tests.peers.hub import HubProcess
from tests.peers.net import free_port

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def gateway(hub: HubProcess, tmp_path: Path) -> Iterator[Gateway]:
    opened = open_gateway(hub, tmp_path / "spool")
    try:
        yield opened
    finally:
        opened.close()


def test_clinic_staff_acknowledge_a_critical_report_on_the_lan_page_while_the_wan_is_down(
    hub: HubProcess, gateway: Gateway, open_page: OpenPage, tmp_path: Path
) -> None:
    report_id = int(sign_report(hub, ingest_study(hub, patient=HOSTILE))["id"])
    pull_until(gateway.puller, report_id, gateway.store)
    pdf = hub_pdf(hub, report_id)
    password = hub.passwords["staff-a"]
    hub.stop()  # the WAN is down

    port = free_port()
    server = LanPageServer(LanPage(gateway.store, clinic="clinic-a"), host="127.0.0.1", port=port)
    server.start()
    try:
        browser = open_page(f"http://127.0.0.1:{port}")
        page = browser.page
        page.goto("/")
        expect(page).to_have_url(re.compile(r"/login$"))
        page.get_by_test_id("lan-login-username").fill("staff-a")
        page.get_by_test_id("lan-login-password").fill("wrong password")
        page.get_by_test_id("lan-login-submit").click()
        expect(page.get_by_test_id("lan-login-error")).to_be_visible()
        page.get_by_test_id("lan-login-password").fill(password)
        page.get_by_test_id("lan-login-submit").click()

        # The clinic's name (synced from the hub with the staff list), not its code.
        expect(page.locator("header h1")).to_contain_text("A镇卫生院 Township Health Centre A")
        expect(page.locator("header h1")).not_to_contain_text("clinic-a")
        row = page.locator(f'[data-testid="lan-report-row"][data-report-id="{report_id}"]')
        expect(row).to_have_attribute("data-critical", "true")
        expect(row).to_have_attribute("data-acknowledged", "false")
        expect(row).to_contain_text("<img src")  # the hostile name, as text
        expect(page.get_by_test_id("lan-critical-open")).to_be_visible()
        # The critical row stands out (the style sheet applies under the CSP).
        background = row.evaluate("el => getComputedStyle(el).backgroundColor")
        assert background == "rgb(253, 232, 232)"

        with page.expect_download() as download:
            row.get_by_test_id("lan-download-pdf").click()
        saved = tmp_path / "downloaded.pdf"
        download.value.save_as(saved)
        assert saved.read_bytes() == pdf
        assert download.value.suggested_filename == f"report-{report_id}.pdf"

        row.get_by_test_id("lan-ack-link").click()
        page.get_by_test_id("lan-ack-method").select_option("phone")
        page.get_by_test_id("lan-ack-read-back").fill("右侧气胸，已电话通知王医生")
        page.get_by_test_id("lan-ack-submit").click()
        expect(page.get_by_test_id("lan-notice")).to_be_visible()
        expect(row).to_have_attribute("data-acknowledged", "true")
        expect(row).to_contain_text("待同步到影像中心")
        expect(page.get_by_test_id("lan-critical-open")).to_have_count(0)

        page.get_by_test_id("lan-lang-switch").click()
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(row).to_contain_text("waiting to reach the hub")
        page.reload()  # the language is kept
        expect(page.locator("html")).to_have_attribute("lang", "en")

        page.get_by_test_id("lan-logout").click()
        expect(page).to_have_url(re.compile(r"/login$"))
        page.goto(f"/reports/{report_id}/pdf")
        expect(page).to_have_url(re.compile(r"/login$"))
        assert browser.problems() == []
    finally:
        server.stop()
    acknowledgement = gateway.store.pending_acknowledgements()
    assert [a.report_id for a in acknowledgement] == [report_id]
    assert acknowledgement[0].username == "staff-a" and acknowledgement[0].method == "phone"
