"""Consultation in the browser (Debian chromium, a real hub): rad1 escalates the study it holds
from the report pane (``escalate``: a question and the provincial hospital, picked from the
institutions above the hub), consult1 answers in its view of the study (``consult-opinion``),
rad1 gets the "opinion arrived" notification in the top bar, sees the opinion text beside the
report pane, marks the notification read and can write the report again. Hostile text in the
question and the opinion stays text. Screenshots are kept in the test's temporary directory
(``consult-*.png``).
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.support import BUNDLED, ingest, login, make_instance
from tests.peers.browser import OpenPage
from tests.peers.hub import HubProcess, start_hub_process

pytestmark = pytest.mark.e2e

HOSTILE = "<script>alert(1)</script>"
QUESTION = f"左侧颞叶高密度影，出血还是钙化？{HOSTILE}"
OPINION = f"考虑急性脑出血，建议 24 小时后复查。{HOSTILE}"


@pytest.fixture(scope="module")
def consult_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, str]]:
    hub = start_hub_process(tmp_path_factory.mktemp("consult-ui") / "hub")
    try:
        uid = ingest(
            hub,
            "clinic-a",
            make_instance(
                BUNDLED / "CT_small.dcm",
                SpecificCharacterSet="ISO_IR 192",
                PatientName="韩^梅梅",
                PatientID="C-1",
                BodyPartExamined="HEAD",
            ),
        )
        yield hub, uid
    finally:
        hub.stop()


def shot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"consult-{name}.png"))


def test_escalate_answer_and_the_radiologist_sees_the_opinion(
    consult_hub: tuple[HubProcess, str], open_page: OpenPage, tmp_path: Path
) -> None:
    hub, uid = consult_hub
    rad = open_page(hub.url)
    page = rad.page
    login(rad, hub, "rad1")
    page.locator("[data-testid=worklist-next], #next-study").first.click()
    expect(page).to_have_url(f"{hub.url}/#/study/{uid}")
    expect(page.locator("[data-testid=report-findings]")).to_be_editable()
    page.locator("[data-testid=report-findings]").fill("左侧颞叶见小片状高密度影。")
    status = page.locator("[data-testid=report-status]")
    expect(status).to_contain_text("已于")  # "已于 hh:mm 保存": on the hub

    page.locator("[data-testid=escalate]").click()
    # The picker offers the city and provincial institutions above the hub, nearest first.
    target = page.locator("[data-testid=escalate-institution]")
    expect(target).to_be_enabled()
    expect(target.locator("option")).to_have_count(2)
    assert target.locator("option").evaluate_all("os => os.map(o => o.value)") == [
        "city",
        "province",
    ]
    target.select_option("province")
    page.locator("#escalate-question").fill(QUESTION)
    shot(page, tmp_path, "1-escalate")
    page.locator("#escalate-submit").click()
    item = page.locator("[data-testid=consult-item]")
    expect(item).to_have_attribute("data-status", "open")
    expect(item.locator(".consult-question")).to_have_text(QUESTION)
    expect(page.locator("#study-status")).to_have_text("会诊中")
    # While the study awaits the consultant the report is read-only, with the reason.
    expect(page.locator("#report-readonly")).to_contain_text("会诊")
    expect(page.locator("[data-testid=escalate]")).to_have_count(0)
    shot(page, tmp_path, "2-escalated")

    # consult1 (province) answers in its view of the study.
    con = open_page(hub.url)
    cpage = con.page
    login(con, hub, "consult1")
    expect(cpage.locator("[data-testid=notifications-count]")).to_have_text("1")
    cpage.goto(f"{hub.url}/#/study/{uid}")
    expect(cpage.locator("[data-testid=consult-item] .consult-question")).to_have_text(QUESTION)
    expect(cpage.locator("#report-readonly")).to_contain_text("只读")
    expect(cpage.locator("[data-testid=report-findings]")).to_have_count(0)
    cpage.locator("[data-testid=consult-opinion]").fill(OPINION)
    shot(cpage, tmp_path, "3-consultant")
    cpage.locator("[data-testid=consult-opinion-submit]").click()
    expect(cpage.locator("[data-testid=consult-opinion-text]")).to_have_text(OPINION)
    assert con.problems() == []

    # rad1: the notification arrives in the top bar; the opinion is shown beside the report
    # pane and the study is back in rad1's hands.
    page.reload()
    count = page.locator("[data-testid=notifications-count]")
    expect(count).to_have_text("1")
    page.locator("[data-testid=notifications]").click()
    note = page.locator("[data-testid=notification]")
    expect(note).to_have_attribute("data-kind", "opinion")
    expect(note).to_contain_text("会诊意见已送达")
    shot(page, tmp_path, "4-notification")
    note.locator(".notify-read").click()
    expect(count).to_be_hidden()
    expect(page.locator("#notifications-panel .empty")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("[data-testid=consult-opinion-text]")).to_have_text(OPINION)
    expect(page.locator("[data-testid=consult-item]")).to_have_attribute("data-status", "answered")
    expect(page.locator("#study-status")).to_have_text("阅片中")
    expect(page.locator("[data-testid=report-findings]")).to_have_value(
        "左侧颞叶见小片状高密度影。"
    )
    expect(page.locator("[data-testid=report-findings]")).to_be_editable()
    expect(page.locator("#study-timeline li[data-kind=opinion]")).to_have_count(1)
    expect(page.locator("#study-timeline .timeline-opinion")).to_have_text(OPINION)
    shot(page, tmp_path, "5-opinion")
    assert rad.problems() == []
