"""The hub's gateways page shows a gateway whose spool is full (its heartbeat's ``spool_full``)
as an alarm, in the user's language."""

import httpx
from playwright.sync_api import expect

from tests.e2e.support import login
from tests.peers.browser import OpenPage
from tests.peers.hub import HubProcess


def test_a_full_spool_shows_as_an_alarm_on_the_gateways_page(
    hub: HubProcess, open_page: OpenPage
) -> None:
    beat = httpx.post(
        f"{hub.url}/api/v1/gateways/heartbeat",
        headers={"Authorization": f"Bearer {hub.gateway_tokens['clinic-a']}"},
        json={
            "version": "0.1.0",
            "ae_title": "CLINIC_A",
            "queue_depth": 3,
            "bytes_pending": 1024,
            "spool_full": True,
            "spool_free_bytes": 700 * 1024 * 1024,
            "spool_min_free_bytes": 1024**3,
            "refused_no_space": 12,
        },
        timeout=10,
    )
    assert beat.status_code == 204, beat.text
    bp = open_page(hub.url)
    page = bp.page
    login(bp, hub, "admin")
    page.click("#nav a[href='#/admin/gateways']")
    row_a = page.locator("#gateways-list tbody tr", has_text="CLINIC_A")
    chip = row_a.locator(".col-state .chip")
    expect(chip).to_have_text("磁盘已满，拒收影像")
    expect(chip).to_have_attribute("data-state", "spoolFull")
    expect(chip).to_have_class("chip gw-silent")  # styled as an alarm
    row_b = page.locator("#gateways-list tbody tr", has_text="CLINIC_B")
    expect(row_b.locator(".col-state .chip")).to_have_attribute("data-state", "silent")
    assert bp.problems() == []
