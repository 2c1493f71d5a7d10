"""Exam orders over the API: clinic staff register, cancel and mark done their own clinic's
orders, hub staff read them; the exam catalogue in the caller's language; bad input is a
problem document listing every bad field, and changes nothing; accession numbers assigned by the
hub stay unique under concurrent orders (SQLite and PostgreSQL)."""

import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from imaging_hub.dicom.uids import is_valid_uid
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.db.models import AuditEvent, Order, User
from imaging_hub.worklist.orders import orders
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
    # Same accession number at the same clinic: refused, on that field.
    again = hub_app.client.post("/api/v1/orders", json=GOOD, headers=staff_a)
    assert again.status_code == 422
    assert again.json()["code"] == "order_invalid"
    assert [(e["field"], e["code"]) for e in again.json()["errors"]] == [
        ("accession_number", "duplicate")
    ]
    # The same accession number at another clinic is another order.
    at_b = hub_app.client.post("/api/v1/orders", json=GOOD, headers=hub_app.headers("staff-b"))
    assert at_b.status_code == 201, at_b.text
    # The other clinic sees none of it and cannot cancel it; the hub sees it.
    staff_b = hub_app.headers("staff-b")
    seen_by_b = hub_app.client.get("/api/v1/orders", headers=staff_b).json()
    assert [o["id"] for o in seen_by_b] == [at_b.json()["id"]]
    cancel_url = f"/api/v1/orders/{order['id']}/cancel"
    assert hub_app.client.post(cancel_url, headers=staff_b).status_code == 404
    seen = hub_app.client.get(
        "/api/v1/orders", params={"clinic": "clinic-a"}, headers=hub_app.headers("rad1")
    ).json()
    assert [o["accession_number"] for o in seen] == [GOOD["accession_number"]]
    with hub_app.sessions() as s:  # both reads of patient data are recorded
        listed = s.scalars(select(AuditEvent).where(AuditEvent.action == "order.listed")).all()
        assert sorted(e.object_id for e in listed) == ["clinic-a", "clinic-b"]
    assert hub_app.client.post(cancel_url, headers=hub_app.headers("admin")).status_code == 403
    cancelled = hub_app.client.post(cancel_url, headers=staff_a, json={"reason": "患者未到"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["status_reason"] == "患者未到"
    assert cancelled.json()["updated_at"] > order["updated_at"]
    again_cancelled = hub_app.client.post(cancel_url, headers=staff_a)
    assert again_cancelled.status_code == 409
    assert again_cancelled.json()["code"] == "order_not_open"
    done = hub_app.client.post(f"/api/v1/orders/{order['id']}/done", headers=staff_a)
    assert done.status_code == 409 and done.json()["code"] == "order_not_open"


PORTAL: dict[str, Any] = {
    "patient_name": "王^小东",
    "patient_name_pinyin": "Wang^XiaoDong",
    "patient_id": "P0002",
    "patient_sex": "M",
    "patient_birth_date": "1958-04-12",
    "exam_type": "DX_CHEST_PA_LAT",
    "priority": "urgent",
    "reason_for_procedure": "咳嗽两周，排除肺炎",
}

# One bad field at a time: (change, the field named in the answer).
BAD: list[tuple[dict[str, Any], str]] = [
    ({"accession_number": "A" * 17}, "accession_number"),
    ({"accession_number": "A\\B"}, "accession_number"),
    ({"patient_id": "P\x01"}, "patient_id"),
    ({"patient_id": "  "}, "patient_id"),
    ({"patient_name": "X" * 65 + "^Y"}, "patient_name"),
    ({"patient_name": "王" * 40 + "^" + "小" * 30}, "patient_name"),  # 64 per group
    ({"patient_name": "A^B^C^D^E^F"}, "patient_name"),
    ({"patient_name": "A\\B"}, "patient_name"),
    ({"patient_name": "王\n小东"}, "patient_name"),
    ({"patient_name": "王=小东"}, "patient_name"),  # '=' groups come from the pinyin
    ({"patient_name": ""}, "patient_name"),
    ({"patient_name_pinyin": "王^小东"}, "patient_name_pinyin"),
    ({"patient_name_pinyin": "Wang=Xiao"}, "patient_name_pinyin"),
    ({"patient_birth_date": "19600230"}, "patient_birth_date"),
    ({"patient_birth_date": "1960-01"}, "patient_birth_date"),
    ({"patient_birth_date": "20991231"}, "patient_birth_date"),
    ({"patient_birth_date": ""}, "patient_birth_date"),
    ({"patient_sex": "X"}, "patient_sex"),
    ({"patient_sex": ""}, "patient_sex"),
    ({"exam_type": "DX_FOOT_XYZ"}, "exam_type"),
    ({"modality": "CT"}, "modality"),  # not the exam type's
    ({"reason_for_procedure": "咳" * 65}, "reason_for_procedure"),
    ({"reason_for_procedure": "咳嗽\\发热"}, "reason_for_procedure"),
    ({"reason_for_procedure": ""}, "reason_for_procedure"),
    ({"scheduled_at": "2026-11-23T09:30:00"}, "scheduled_at"),
    ({"scheduled_at": "soon"}, "scheduled_at"),
    ({"scheduled_at": "2031-01-01T09:30:00+08:00"}, "scheduled_at"),
    ({"scheduled_station_ae_title": "CLINIC_A_DR_ROOM_2"}, "scheduled_station_ae_title"),
    ({"priority": "asap"}, "priority"),
]


@pytest.mark.parametrize(("change", "field"), BAD)
def test_bad_orders_are_refused_and_change_nothing(
    hub_app: HubApp, change: dict[str, Any], field: str
) -> None:
    before = _count(hub_app)
    response = hub_app.client.post(
        "/api/v1/orders", json={**PORTAL, **change}, headers=hub_app.headers("staff-a")
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "order_invalid"
    assert [e["field"] for e in body["errors"]] == [field], body
    assert all(e["message"] and e["code"] for e in body["errors"])
    assert _count(hub_app) == before


def test_every_problem_is_listed_at_once(hub_app: HubApp) -> None:
    before = _count(hub_app)
    staff_a = hub_app.headers("staff-a")
    missing = hub_app.client.post("/api/v1/orders", json={"exam_type": "CT_HEAD"}, headers=staff_a)
    assert missing.status_code == 422, missing.text
    assert {(e["field"], e["code"]) for e in missing.json()["errors"]} == {
        ("patient_id", "required"),
        ("patient_name", "required"),
        ("patient_sex", "required"),
        ("patient_birth_date", "required"),
        ("reason_for_procedure", "required"),
    }
    several = hub_app.client.post(
        "/api/v1/orders",
        json={
            **PORTAL,
            "patient_birth_date": "20991231",
            "exam_type": "nope",
            "patient_name": "王\\小东",
            "priority": "soon",
        },
        headers=staff_a,
    )
    assert {(e["field"], e["code"]) for e in several.json()["errors"]} == {
        ("patient_birth_date", "future"),
        ("exam_type", "unknown"),
        ("patient_name", "invalid_characters"),
        ("priority", "invalid"),
    }
    # A body that is not the schema at all: the framework's refusal, still problem+json.
    wrong_type = hub_app.client.post("/api/v1/orders", json={"patient_id": 5}, headers=staff_a)
    assert wrong_type.status_code == 422 and wrong_type.json()["code"] == "validation_failed"
    assert _count(hub_app) == before


def test_portal_order_takes_the_catalogue_and_gets_an_accession_number(hub_app: HubApp) -> None:
    staff_a = hub_app.headers("staff-a")
    first = hub_app.client.post("/api/v1/orders", json=PORTAL, headers=staff_a)
    assert first.status_code == 201, first.text
    o = first.json()
    assert o["patient_name"] == "Wang^XiaoDong=王^小东"
    assert o["patient_birth_date"] == "19580412" and o["patient_sex"] == "M"
    assert (o["modality"], o["body_part_examined"], o["expected_images"]) == ("DX", "CHEST", 2)
    assert o["requested_procedure_description"] == "胸部正侧位"
    assert o["reason_for_procedure"] == PORTAL["reason_for_procedure"]
    assert o["exam_type"] == "DX_CHEST_PA_LAT" and o["priority"] == "urgent"
    today = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y%m%d")
    assert o["accession_number"] == f"{today}0001"
    assert o["requested_procedure_id"] == o["accession_number"]
    scheduled = datetime.fromisoformat(o["scheduled_at"])
    assert abs(scheduled - datetime.now(UTC)) < timedelta(minutes=1)  # default: now
    # Without pinyin the name is as typed; the counter goes on; other clinics count apart.
    plain = {**PORTAL, "patient_name_pinyin": "", "patient_name": "李华"}
    second = hub_app.client.post("/api/v1/orders", json=plain, headers=staff_a).json()
    assert second["patient_name"] == "李华" and second["accession_number"] == f"{today}0002"
    at_b = hub_app.client.post("/api/v1/orders", json=plain, headers=hub_app.headers("staff-b"))
    assert at_b.json()["accession_number"] == f"{today}0001"
    # The order was audited as created.
    with hub_app.sessions() as s:
        ops = s.scalars(select(AuditEvent.detail).where(AuditEvent.action == "order.written"))
        assert [d["op"] for d in ops] == ["created"] * 3


def test_exam_done_and_cancel_with_reason(hub_app: HubApp) -> None:
    staff_a, staff_b = hub_app.headers("staff-a"), hub_app.headers("staff-b")
    placed = hub_app.client.post("/api/v1/orders", json=PORTAL, headers=staff_a).json()
    done_url = f"/api/v1/orders/{placed['id']}/done"
    # Another clinic's order is not there for staff-b; nothing changes.
    assert hub_app.client.post(done_url, headers=staff_b).status_code == 404
    assert hub_app.client.post(done_url, headers=hub_app.headers("rad1")).status_code == 403
    done = hub_app.client.post(done_url, headers=staff_a)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed" and done.json()["done_at"]
    assert done.json()["updated_at"] > placed["updated_at"]
    again = hub_app.client.post(done_url, headers=staff_a)
    assert again.status_code == 409 and again.json()["code"] == "order_not_open"
    with hub_app.sessions() as s:
        row = s.get_one(Order, placed["id"])
        staff = s.scalars(select(User).where(User.username == "staff-a")).one()
        assert row.done_by_id == staff.id and row.done_at is not None
        ops = [
            d["op"]
            for d in s.scalars(
                select(AuditEvent.detail)
                .where(AuditEvent.action == "order.written")
                .order_by(AuditEvent.id)
            )
        ]
        assert ops == ["created", "done"]
    # A cancel reason is checked like any field; a bad one changes nothing.
    other = hub_app.client.post(
        "/api/v1/orders", json={**PORTAL, "patient_id": "P9"}, headers=staff_a
    ).json()
    cancel_url = f"/api/v1/orders/{other['id']}/cancel"
    before = _count(hub_app)
    for reason in ("x" * 201, "a\x00b"):
        bad = hub_app.client.post(cancel_url, headers=staff_a, json={"reason": reason})
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"][0]["field"] == "reason"
    assert hub_app.client.post(cancel_url, headers=staff_b, json={}).status_code == 404
    assert _count(hub_app) == before
    ok = hub_app.client.post(cancel_url, headers=staff_a, json={"reason": "重复申请"})
    assert ok.json()["status"] == "cancelled" and ok.json()["status_reason"] == "重复申请"


def test_exam_types_in_the_callers_language(hub_app: HubApp) -> None:
    staff_a = hub_app.headers("staff-a")
    zh = hub_app.client.get("/api/v1/exam-types", headers=staff_a)
    assert zh.status_code == 200, zh.text
    body = zh.json()
    assert body["language"] == "zh-CN"
    by_code = {e["code"]: e for e in body["exam_types"]}
    assert 12 <= len(by_code) <= 20
    assert by_code["DX_CHEST_PA"]["name"] == "胸部正位"
    assert by_code["DX_CHEST_PA"]["expected_images"] == 1
    assert by_code["DX_CHEST_PA_LAT"]["expected_images"] == 2
    assert by_code["CT_HEAD"]["expected_images"] == 0
    assert by_code["US_THYROID"]["modality"] == "US"
    assert all(re.fullmatch(r"[A-Z0-9_]+", c) for c in by_code)
    en = hub_app.client.get(
        "/api/v1/exam-types", headers={**staff_a, "Accept-Language": "en-GB,en;q=0.9"}
    ).json()
    assert en["language"] == "en"
    assert {e["code"]: e["name"] for e in en["exam_types"]}["DX_CHEST_PA"] == "Chest PA"
    assert en["exam_types"][0]["names"]["zh-CN"] == body["exam_types"][0]["name"]
    explicit = hub_app.client.get("/api/v1/exam-types?lang=en", headers=staff_a).json()
    assert explicit["language"] == "en"
    # Readers of orders only: a gateway, or no token, gets nothing.
    gateway = {"Authorization": f"Bearer {hub_app.gateway_tokens['clinic-a']}"}
    assert hub_app.client.get("/api/v1/exam-types", headers=gateway).status_code == 403
    assert hub_app.client.get("/api/v1/exam-types").status_code == 401


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
        (_create("clinic-b", "B3", when="2026-11-23T10:00"), "time zone"),
        (_create("clinic-b", "B2", when="later"), "ISO 8601"),
        (["order", "cancel", "999"], "No order"),
    ]:
        bad = hub_app.admin_cli(*args)
        assert bad.returncode != 0, args
        assert message in bad.stdout, (args, bad.stdout)
    assert _count(hub_app) == before
    with hub_app.sessions() as s:
        order_id = s.scalars(select(Order.id)).one()
    cancelled = hub_app.admin_cli("order", "cancel", str(order_id), "--reason", "重复")
    assert cancelled.returncode == 0, cancelled.stdout
    # A portal-style order by exam type: the accession number is assigned, "exam done" works.
    portal = hub_app.admin_cli(
        *("order", "create", "clinic-a", "--patient-id", "PA1", "--exam-type", "dx_knee_ap_lat"),
        *("--patient-name", "王^小东", "--pinyin", "Wang^XiaoDong", "--sex", "M"),
        *("--birth-date", "19600101", "--reason", "膝痛"),
    )
    assert portal.returncode == 0, portal.stdout + portal.stderr
    today = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y%m%d")
    assert f"accession {today}0001" in portal.stdout
    missing = hub_app.admin_cli(
        "order", "create", "clinic-a", "--patient-id", "PA2", "--exam-type", "CT_HEAD"
    )
    assert missing.returncode != 0 and "reason_for_procedure" in missing.stdout
    with hub_app.sessions() as s:
        row = s.scalars(select(Order).where(Order.patient_id == "PA1")).one()
        assert row.status_reason == "" and row.patient_name == "Wang^XiaoDong=王^小东"
        assert s.scalars(select(Order.status_reason).where(Order.id == order_id)).one() == "重复"
    assert hub_app.admin_cli("order", "done", str(row.id)).returncode == 0
    again = hub_app.admin_cli("order", "done", str(row.id))
    assert again.returncode != 0 and "completed" in again.stdout


# --- accession numbers under concurrent orders ----------------------------------------------


def _concurrent_orders(hub: HubApp, threads: int, each: int) -> list[str]:
    barrier = threading.Barrier(threads)
    found: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        try:
            with hub.sessions() as session:
                user = session.scalars(select(User).where(User.username == "staff-a")).one()
                caller = Caller(principal=user, source_ip="127.0.0.1")
                barrier.wait(timeout=30)
                for i in range(each):
                    new = orders.NewOrder(**{**PORTAL, "patient_id": f"C{n}-{i}"})
                    view = orders.place_order(session, caller, new)
                    with lock:
                        found.append(view.accession_number)
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not errors, errors
    return found


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_assigned_accession_numbers_are_unique_under_concurrency(
    request: pytest.FixtureRequest, backend: str
) -> None:
    hub: HubApp = request.getfixturevalue("hub_app" if backend == "sqlite" else "pg_hub_app")
    found = _concurrent_orders(hub, threads=6, each=4)
    today = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y%m%d")
    assert len(found) == 24 and len(set(found)) == 24
    assert sorted(found) == [f"{today}{n:04d}" for n in range(1, 25)]
    with hub.sessions() as s:
        assert s.scalar(select(func.count(Order.id))) == 24


def test_demo_orders_reach_each_clinics_feed_once(hub_app: HubApp) -> None:
    from imaging_hub.worklist.orders.demo import register_demo_orders

    with hub_app.sessions() as session:
        assert register_demo_orders(session) == 6
    with hub_app.sessions() as session:  # a demo restarted on the same data adds none
        assert register_demo_orders(session) == 0
    for clinic in ("clinic-a", "clinic-b"):
        feed = hub_app.client.get(
            "/api/v1/gateway/orders",
            headers={"Authorization": f"Bearer {hub_app.gateway_tokens[clinic]}"},
        ).json()["orders"]
        assert len(feed) == 3 and {o["status"] for o in feed} == {"scheduled"}
        assert all(re.search(r"[\u4e00-\u9fff]", o["patient_name"]) for o in feed)
        assert any("=" in o["patient_name"] for o in feed)  # some with pinyin
        assert all(o["reason_for_procedure"] and o["exam_type"] for o in feed)
        prefix = clinic[-1].upper() + "-"
        assert all(o["patient_id"].startswith(prefix) for o in feed)
