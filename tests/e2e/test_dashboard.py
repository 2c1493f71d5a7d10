"""The statistics dashboard (#/dashboard) in Debian chromium, drawn from GET /api/v1/stats/*."""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect

from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.db.models import Priority
from imaging_hub.worklist.reading import assignment
from tests.peers.browser import OpenPage
from tests.peers.hub import start_hub_process
from tests.worklist_support import add_study, user

pytestmark = pytest.mark.e2e


def test_dashboard_charts_in_both_languages(
    open_page: OpenPage, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    hub = start_hub_process(tmp_path / "hub")
    try:
        now = datetime.now(UTC)
        lease = assignment.LeasePolicy(lease=timedelta(hours=1))
        with hub.sessions() as db:
            rad1 = user(db, "rad1")
            for i, (clinic, priority) in enumerate(
                [
                    ("clinic-a", Priority.stat),
                    ("clinic-a", Priority.routine),
                    ("clinic-b", Priority.urgent),
                ]
            ):
                study = add_study(
                    db, clinic=clinic, priority=priority, completed_at=now - timedelta(hours=2)
                )
                if i < 2:
                    uid = study.study_instance_uid
                    assignment.claim(
                        session=db,
                        caller=Caller(rad1),
                        study_instance_uid=uid,
                        lease=lease,
                        now=now - timedelta(hours=1, minutes=50),
                    )
                    assignment.record_signed(
                        session=db,
                        radiologist=rad1,
                        study_instance_uid=uid,
                        now=now - timedelta(hours=1, minutes=40),
                    )
        bp = open_page(hub.url)
        page = bp.page
        page.goto("/")
        page.fill("#login-username", "admin")
        page.fill("#login-password", hub.passwords["admin"])
        page.click("#login-submit")
        page.click("#nav a[href='#/dashboard']")
        expect(page).to_have_url(re.compile(r"#/dashboard"))
        expect(page.locator("h1")).to_have_text("统计")
        expect(page.locator("#table-volume tbody tr")).to_have_count(2)
        volume = page.locator("#table-volume tbody").inner_text()
        assert "A镇卫生院" in volume and "B镇卫生院" in volume  # names, not codes
        assert "clinic-a" not in volume
        # Stacked bars: one rect per clinic for the day, heights from the API's counts.
        bars = page.locator("#chart-volume rect.chart-bar")
        expect(bars).to_have_count(2)
        assert sorted(bars.evaluate_all("els => els.map(e => e.dataset.value)")) == ["1", "2"]
        turnaround = page.locator("#table-turnaround tbody tr").all_inner_texts()
        assert any(row.startswith("急诊") and "20" in row for row in turnaround)
        expect(page.locator("#table-workload tbody")).to_contain_text("李医生")
        expect(page.locator("#table-sla thead")).to_contain_text("达标率")
        page.click("#lang-switch")
        expect(page.locator("h1")).to_have_text("Statistics")
        expect(page.locator("#table-sla thead")).to_contain_text("Compliance")
        expect(page.locator("#stats-window")).to_contain_text("Asia/Shanghai")
        shot = tmp_path_factory.mktemp("screenshots") / "dashboard-1366x768.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"dashboard screenshot: {shot}")
        assert bp.problems() == []
        # A radiologist has no dashboard link, and the API refuses the statistics.
        page.click("#logout")
        page.fill("#login-username", "rad1")
        page.fill("#login-password", hub.passwords["rad1"])
        page.click("#login-submit")
        expect(page.locator("#nav a[href='#/worklist']")).to_be_visible()
        expect(page.locator("#nav a[href='#/dashboard']")).to_have_count(0)
    finally:
        hub.stop()
