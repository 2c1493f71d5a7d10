"""The hub's /metrics: the figures operators alert on, no patient data, and the alert rules in
deploy/prometheus/alerts.yml use only metrics the hub (or a gateway) exports."""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from imaging_hub.worklist.db.models import Gateway, Study
from imaging_hub.worklist.stats import metrics as hub_metrics
from tests.security.conftest import HubApp
from tests.security.test_hostile_input import ingest

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
GATEWAY_METRICS = Path(__file__).resolve().parents[2] / "src/imaging_hub/dicom_gateway/metrics.py"


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(hub_app: HubApp) -> tuple[Samples, str]:
    """The hub's /metrics as {(name, sorted labels): value}, and the text itself."""
    response = hub_app.client.get("/metrics")
    assert response.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    return samples, response.text


def test_metrics_count_what_operators_alert_on_and_hold_no_patient_data(hub_app: HubApp) -> None:
    hub_metrics.CACHE_SECONDS = 0.0
    try:
        uid = ingest(hub_app, name="机密^患者")
        with hub_app.sessions() as session:
            study = session.scalars(select(Study).where(Study.study_instance_uid == uid)).one()
            study.due_at = datetime.now(UTC) - timedelta(minutes=5)
            patient_id = "<b>ID-1</b>"
            session.commit()
        beat = hub_app.client.post(
            "/api/v1/gateways/heartbeat",
            json={"version": "1", "queue_depth": 9, "bytes_pending": 1, "spool_full": True},
            headers={"Authorization": f"Bearer {hub_app.gateway_tokens['clinic-a']}"},
        )
        assert beat.status_code == 204, beat.text
        samples, text = _samples(hub_app)
    finally:
        hub_metrics.CACHE_SECONDS = 5.0
    assert samples[("imaging_hub_studies", (("status", "unread"),))] == 1
    assert samples[("imaging_hub_studies_overdue", (("priority", "routine"),))] == 1
    assert samples[("imaging_hub_studies_overdue", (("priority", "stat"),))] == 0
    with hub_app.sessions() as session:
        gateway = session.scalars(select(Gateway)).all()
        name_a = next(g.name for g in gateway if g.institution.code == "clinic-a")
    labels = (("clinic", "clinic-a"), ("gateway", name_a))
    assert samples[("imaging_hub_heartbeat_spool_full", labels)] == 1
    assert samples[("imaging_hub_heartbeat_queue_depth", labels)] == 9
    assert samples[("imaging_hub_heartbeat_timestamp_seconds", labels)] > 1.7e9
    b_labels = next(
        k[1]
        for k in samples
        if k[0] == "imaging_hub_heartbeat_timestamp_seconds" and ("clinic", "clinic-b") in k[1]
    )
    assert samples[("imaging_hub_heartbeat_timestamp_seconds", b_labels)] == 0  # never seen
    assert samples[("imaging_hub_reports_undelivered", ())] == 0
    # Public endpoint: counts and codes, never the patient.
    assert "机密" not in text and patient_id not in text and uid not in text


def test_metrics_are_cached_so_scrapers_cost_the_database_little(hub_app: HubApp) -> None:
    first, _ = _samples(hub_app)
    ingest(hub_app, name="缓存^测试")
    again, _ = _samples(hub_app)  # within CACHE_SECONDS: the same figures
    assert (
        again[("imaging_hub_studies", (("status", "unread"),))]
        == first[("imaging_hub_studies", (("status", "unread"),))]
    )


def test_every_alert_rule_uses_exported_metrics(hub_app: HubApp) -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len(alerts) >= 8
    hub_names = {name for name, _ in _samples(hub_app)[0]}
    gateway_names = {
        f"imaging_hub_gateway_{m}"
        for m in re.findall(r'\("([a-z_]+)",', GATEWAY_METRICS.read_text())
    }
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"page", "warn"}, rule
        assert rule["annotations"]["summary"], rule
        used = set(re.findall(r"\b(imaging_hub_[a-z_]+)", rule["expr"]))
        unknown = used - hub_names - gateway_names
        assert not unknown, f"{rule['alert']} uses metrics nobody exports: {unknown}"
        if rule["expr"].startswith("up{"):
            continue
        assert used, f"{rule['alert']} uses none of our metrics"
