"""The LAN page shows the clinic's wall clock (GatewaySettings.timezone), not the box's: a
gateway box often runs on UTC, and a report signed at 00:30 in Beijing is not "16:30 yesterday"."""

from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from imaging_hub.config import CONFIG_ENV, GatewaySettings, HubSettings
from imaging_hub.dicom_gateway.lan_page import DEFAULT_ZONE, local_time


@pytest.mark.parametrize(
    ("moment", "zone", "shown"),
    [
        ("2026-12-06T16:30:00Z", DEFAULT_ZONE, "2026-12-07 00:30"),
        ("2026-12-06T16:30:00+00:00", DEFAULT_ZONE, "2026-12-07 00:30"),
        ("2026-12-07T00:30:00+08:00", ZoneInfo("UTC"), "2026-12-06 16:30"),
        ("2026-12-06T16:30:00", DEFAULT_ZONE, "2026-12-06 16:30"),  # no offset: as it is
        ("not a time <script>", DEFAULT_ZONE, "not a time <script>"),  # escaped by the page
        ("", DEFAULT_ZONE, ""),
        (None, DEFAULT_ZONE, ""),
    ],
)
def test_times_are_shown_in_the_clinic_zone(moment: str | None, zone: ZoneInfo, shown: str) -> None:
    assert local_time(moment, zone) == shown


def test_the_default_zone_is_the_settings_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.delenv("IMAGING_HUB_GATEWAY_TIMEZONE", raising=False)
    assert ZoneInfo(GatewaySettings().timezone) == DEFAULT_ZONE


@pytest.mark.parametrize("settings", [GatewaySettings, HubSettings])
@pytest.mark.parametrize("name", ["Mars/Olympus", "../../etc/passwd", "", "Asia/Shanghai\n"])
def test_an_unknown_time_zone_is_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, settings: type[GatewaySettings | HubSettings], name: str
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    with pytest.raises(ValidationError, match="not a known time zone"):
        settings(timezone=name)


def test_another_known_zone_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert GatewaySettings(timezone="Asia/Urumqi").timezone == "Asia/Urumqi"
