"""The demo's exam orders: a few of today's orders at each demo clinic (Chinese names, some with
pinyin), registered by the clinic's staff account, so a modality's ``findscu -W`` at a demo
gateway gets answers once the gateway has synced its orders."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.db.models import Institution, Order, Priority, User
from imaging_hub.worklist.orders.orders import NewOrder, place_order


@dataclass(frozen=True)
class DemoOrder:
    clinic: str
    staff: str
    minutes: int  # from now
    order: NewOrder


def _order(
    patient_id: str,
    name: str,
    pinyin: str,
    sex: str,
    birth: str,
    exam: str,
    reason: str,
    priority: Priority = Priority.routine,
) -> NewOrder:
    return NewOrder(
        patient_id=patient_id,
        patient_name=name,
        patient_name_pinyin=pinyin,
        patient_sex=sex,
        patient_birth_date=birth,
        exam_type=exam,
        reason_for_procedure=reason,
        priority=priority,
    )


DEMO_ORDERS: tuple[DemoOrder, ...] = (
    DemoOrder(
        "clinic-a",
        "staff-a",
        -40,
        _order(
            "A-1001",
            "王^小东",
            "Wang^XiaoDong",
            "M",
            "19580412",
            "DX_CHEST_PA_LAT",
            "咳嗽两周，发热三天，排除肺炎",
        ),
    ),
    DemoOrder(
        "clinic-a",
        "staff-a",
        -10,
        _order(
            "A-1002",
            "李^华",
            "",
            "F",
            "19470923",
            "CT_HEAD",
            "突发头痛、呕吐 2 小时",
            Priority.stat,
        ),
    ),
    DemoOrder(
        "clinic-a",
        "staff-a",
        30,
        _order(
            "A-1003",
            "张^秀英",
            "Zhang^XiuYing",
            "F",
            "19650301",
            "US_ABDOMEN",
            "右上腹痛，查胆囊结石",
        ),
    ),
    DemoOrder(
        "clinic-b",
        "staff-b",
        -30,
        _order(
            "B-2001",
            "赵^六",
            "",
            "M",
            "19720815",
            "DX_KNEE_AP_LAT",
            "左膝外伤后疼痛",
            Priority.urgent,
        ),
    ),
    DemoOrder(
        "clinic-b",
        "staff-b",
        20,
        _order("B-2002", "陈^静", "Chen^Jing", "F", "19940607", "US_OBSTETRIC", "孕 20 周常规检查"),
    ),
    DemoOrder(
        "clinic-b",
        "staff-b",
        60,
        _order("B-2003", "刘^洋", "Liu^Yang", "M", "19810119", "DX_LSPINE_AP_LAT", "腰痛一月"),
    ),
)


def register_demo_orders(
    session: Session, *, timezone: str = "Asia/Shanghai", now: datetime | None = None
) -> int:
    """Register :data:`DEMO_ORDERS` around *now*, unless the clinic already has orders of
    today (a demo restarted on the same data keeps its orders). Returns how many were made."""
    now = now or datetime.now(UTC)
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    made = 0
    for code in sorted({d.clinic for d in DEMO_ORDERS}):
        clinic = session.scalar(select(Institution).where(Institution.code == code))
        if clinic is None:
            continue
        today = session.scalar(
            select(func.count(Order.id)).where(
                Order.clinic_id == clinic.id,
                Order.created_at >= day_start.astimezone(UTC),
                Order.created_at < (day_start + timedelta(days=1)).astimezone(UTC),
            )
        )
        if today:
            continue
        for demo in (d for d in DEMO_ORDERS if d.clinic == code):
            staff = session.scalars(select(User).where(User.username == demo.staff)).one()
            caller = Caller(principal=staff, source_ip="demo", session_key="demo")
            when = now + timedelta(minutes=demo.minutes)
            order = NewOrder(**{**vars(demo.order), "scheduled_at": when})
            place_order(session, caller, order, timezone=timezone)
            made += 1
    return made
