"""POST /api/v1/consultations/{id}/forward over the API: a city consultant passes the question to
the province; bad input is a problem document and changes nothing."""

from datetime import timedelta

from sqlalchemy import select

from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.db.models import Consultation, Institution, Role, User
from imaging_hub.worklist.reading import assignment as a
from imaging_hub.worklist.reading import consultations as c
from tests.security.conftest import HubApp
from tests.worklist_support import add_study, add_user


def _escalated_to_city(hub_app: HubApp) -> int:
    with hub_app.sessions() as s:
        city = s.scalars(select(Institution).where(Institution.code == "city")).one()
        add_user(s, "consult-city", Role.consultant, city)
        s.commit()
        study = add_study(s)
        rad1 = s.scalars(select(User).where(User.username == "rad1")).one()
        lease = a.LeasePolicy(lease=timedelta(minutes=10))
        a.claim(
            session=s, caller=Caller(rad1), study_instance_uid=study.study_instance_uid, lease=lease
        )
        asked = c.escalate(
            session=s,
            caller=Caller(rad1),
            study_instance_uid=study.study_instance_uid,
            institution_code="city",
            question="Widened mediastinum?",
        )
        return asked.id


def _statuses(hub_app: HubApp) -> list[tuple[int, str, str]]:
    with hub_app.sessions() as s:
        rows = s.execute(
            select(Consultation.id, Consultation.status, Consultation.opinion).order_by(
                Consultation.id
            )
        ).all()
        return [(i, str(st), op) for i, st, op in rows]


def test_forward_over_the_api(hub_app: HubApp) -> None:
    consultation_id = _escalated_to_city(hub_app)
    city = hub_app.headers("consult-city")
    url = f"/api/v1/consultations/{consultation_id}/forward"
    before = _statuses(hub_app)
    for body, status in [
        ({"institution": "HUB!", "note": "x"}, 422),
        ({"institution": "province", "note": ""}, 422),
        ({"institution": "nowhere", "note": "x"}, 404),
        ({"institution": "hub", "note": "x"}, 409),
        ({"institution": "province", "note": "x" * 10_001}, 422),
    ]:
        response = hub_app.client.post(url, json=body, headers=city)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    # Neither the asking radiologist nor another institution's consultant may forward it.
    body = {"institution": "province", "note": "Needs the provincial team."}
    assert hub_app.client.post(url, json=body, headers=hub_app.headers("rad1")).status_code == 403
    assert (
        hub_app.client.post(url, json=body, headers=hub_app.headers("consult1")).status_code == 404
    )
    assert _statuses(hub_app) == before
    response = hub_app.client.post(url, json=body, headers=city)
    assert response.status_code == 200, response.text
    onward = response.json()
    assert (onward["to_institution"], onward["status"]) == ("province", "open")
    assert onward["requested_by"] == "rad1"
    forwarded = hub_app.client.get(f"/api/v1/consultations/{consultation_id}", headers=city).json()
    assert (forwarded["status"], forwarded["opinion"]) == ("forwarded", body["note"])
    province = hub_app.headers("consult1")
    mine = hub_app.client.get("/api/v1/consultations", headers=province).json()
    assert [m["id"] for m in mine] == [onward["id"]]
    again = hub_app.client.post(url, json=body, headers=city)
    assert again.status_code == 409
