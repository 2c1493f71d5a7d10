"""Exam orders over the API: clinic staff register and cancel their own clinic's orders, hub
staff read them; bad input is a problem document and changes nothing."""

from typing import Any

import pytest
from sqlalchemy import func, select

from imaging_hub.dicom.uids import is_valid_uid
from imaging_hub.worklist.db.models import AuditEvent, Order
from tests.security.conftest import HubApp

GOOD: dict[str, Any] = {
    "accession_number": "A20261123001",
    "patient_id": "P0001",
    "patient_name": "王^小东=ワン^ショウトウ",
    "patient_birth_date": "19600229",
    "patient_sex": "m",
    "modality": "dx",
    "body_part_examined": "chest",
    "scheduled_station_ae_title": "CLINIC_A_DR",
    "scheduled_at": "2026-11-23T09:30:00+08:00",
    "requested_procedure_description": "胸部正位 Chest PA",
    "priority": "urgent",
}


def _count(hub_app: HubApp) -> tuple[int, int]:
    with hub_app.sessions() as s:
        return (
            s.scalar(select(func.count(Order.id))) or 0,
            s.scalar(select(func.count(AuditEvent.id))) or 0,
        )


def test_register_list_and_cancel(hub_app: HubApp) -> None:
    staff_a = hub_app.headers("staff-a")
    created = hub_app.client.post("/api/v1/orders", json=GOOD, headers=staff_a)
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["clinic"] == "clinic-a" and order["status"] == "scheduled"
    assert (order["modality"], order["body_part_examined"], order["patient_sex"]) == (
        "DX",
        "CHEST",
        "M",
    )
    assert order["patient_name"] == GOOD["patient_name"]
    assert is_valid_uid(order["study_instance_uid"])
    # Same accession number at the same clinic: refused.
    again = hub_app.client.post("/api/v1/orders", json=GOOD, headers=staff_a)
    assert again.status_code == 409
    # The other clinic sees none of it and cannot cancel it; the hub sees it.
    staff_b = hub_app.headers("staff-b")
    assert hub_app.client.get("/api/v1/orders", headers=staff_b).json() == []
    cancel_url = f"/api/v1/orders/{order['id']}/cancel"
    assert hub_app.client.post(cancel_url, headers=staff_b).status_code == 404
    seen = hub_app.client.get(
        "/api/v1/orders", params={"clinic": "clinic-a"}, headers=hub_app.headers("rad1")
    ).json()
    assert [o["accession_number"] for o in seen] == [GOOD["accession_number"]]
    assert hub_app.client.post(cancel_url, headers=hub_app.headers("admin")).status_code == 403
    cancelled = hub_app.client.post(cancel_url, headers=staff_a)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert hub_app.client.post(cancel_url, headers=staff_a).status_code == 409


BAD: list[tuple[dict[str, Any], int]] = [
    ({"accession_number": "A" * 17}, 422),
    ({"accession_number": "A\\B"}, 400),
    ({"accession_number": "   "}, 400),
    ({"patient_id": "P\x01"}, 400),
    ({"patient_name": "X" * 65 + "^Y"}, 400),
    ({"patient_name": "A\\B"}, 400),
    ({"patient_birth_date": "19600230"}, 400),
    ({"patient_birth_date": "1960-01"}, 400),
    ({"patient_sex": "X"}, 400),
    ({"modality": "D-X"}, 400),
    ({"body_part_examined": "<b>"}, 400),
    ({"scheduled_at": "2026-11-23T09:30:00"}, 422),
    ({"scheduled_at": "soon"}, 422),
    ({"priority": "asap"}, 422),
    ({"modality": ""}, 422),
]


@pytest.mark.parametrize(("change", "status"), BAD)
def test_bad_orders_are_refused_and_change_nothing(
    hub_app: HubApp, change: dict[str, Any], status: int
) -> None:
    before = _count(hub_app)
    response = hub_app.client.post(
        "/api/v1/orders", json={**GOOD, **change}, headers=hub_app.headers("staff-a")
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert _count(hub_app) == before


def test_only_clinic_staff_register_orders(hub_app: HubApp) -> None:
    before = _count(hub_app)
    for user in ("admin", "rad1", "consult1"):
        response = hub_app.client.post("/api/v1/orders", json=GOOD, headers=hub_app.headers(user))
        assert response.status_code == 403, user
    assert hub_app.client.post("/api/v1/orders", json=GOOD).status_code == 401
    assert _count(hub_app) == before


def _create(clinic: str, accession: str, when: str = "2026-11-23T10:00+08:00") -> list[str]:
    return [
        *("order", "create", clinic, "--accession", accession, "--patient-id", "PB1"),
        *("--modality", "CR", "--scheduled-at", when),
    ]


def test_order_cli(hub_app: HubApp) -> None:
    created = hub_app.admin_cli(*_create("clinic-b", "B1"), "--patient-name", "张^伟")
    assert created.returncode == 0, created.stdout + created.stderr
    assert "StudyInstanceUID 2.25." in created.stdout
    listed = hub_app.admin_cli("order", "list", "--clinic", "clinic-b")
    assert "B1" in listed.stdout and "张" not in listed.stdout  # no patient names printed
    before = _count(hub_app)
    for args, message in [
        (_create("hub", "X"), "clinics"),
        (_create("clinic-b", "B1"), "already has an order"),
        (_create("clinic-b", "B2", when="later"), "ISO 8601"),
        (["order", "cancel", "999"], "No order"),
    ]:
        bad = hub_app.admin_cli(*args)
        assert bad.returncode != 0, args
        assert message in bad.stdout, (args, bad.stdout)
    assert _count(hub_app) == before
    with hub_app.sessions() as s:
        order_id = s.scalars(select(Order.id)).one()
    assert hub_app.admin_cli("order", "cancel", str(order_id)).returncode == 0
