"""Settings: one typed class per deployable (pydantic-settings: TOML file + IMAGING_HUB_* vars).

Priority, highest first: values passed in code (the CLI, the demo), environment variables,
the TOML file named by ``IMAGING_HUB_CONFIG`` (or ``--config``), then the defaults below.
The hub reads variables ``IMAGING_HUB_<FIELD>``; the gateway ``IMAGING_HUB_GATEWAY_<FIELD>``.
"""

import os
from pathlib import Path
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV = "IMAGING_HUB_CONFIG"


def _time_zone(name: str) -> str:
    """*name* if it is an IANA time zone this machine knows (``Asia/Shanghai``), else ValueError."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not a known time zone (e.g. Asia/Shanghai).") from exc
    return name


class _TomlSettings(BaseSettings):
    """Adds the TOML file (section ``[<toml_section>]``) as a settings source."""

    toml_section: ClassVar[str] = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(CONFIG_ENV)
        if path:
            toml = TomlConfigSettingsSource(settings_cls, toml_file=Path(path))
            sources.append(_SectionSource(settings_cls, toml, cls.toml_section))
        return tuple(sources)


class _SectionSource(PydanticBaseSettingsSource):
    """Takes one ``[section]`` of a TOML source."""

    def __init__(
        self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource, section: str
    ) -> None:
        super().__init__(settings_cls)
        self._inner = inner
        self._section = section

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data = self._inner()
        section = data.get(self._section, {})
        return dict(section) if isinstance(section, dict) else {}


class HubSettings(_TomlSettings):
    """Settings of the hub service (``imaging-hub hub serve``)."""

    model_config = SettingsConfigDict(env_prefix="IMAGING_HUB_", extra="ignore")
    toml_section: ClassVar[str] = "hub"

    data_dir: Path = Field(
        default=Path("var/hub"),
        description="Directory for the embedded database, object store and keys.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: SQLite file hub.sqlite3 in data_dir. "
        "PostgreSQL: postgresql+psycopg://user:pw@host/db.",
    )
    object_store: Literal["filesystem", "s3"] = Field(
        default="filesystem", description="Object store backend for DICOM files and reports."
    )
    object_store_dir: Path | None = Field(
        default=None, description="Root of the filesystem object store; default data_dir/objects."
    )
    s3_endpoint: str = Field(default="127.0.0.1:9000", description="S3 endpoint host:port.")
    s3_access_key: SecretStr = Field(default=SecretStr(""), description="S3 access key.")
    s3_secret_key: SecretStr = Field(default=SecretStr(""), description="S3 secret key.")
    s3_bucket: str = Field(default="imaging-hub", description="S3 bucket holding all objects.")
    s3_secure: bool = Field(default=False, description="Use HTTPS to reach the S3 endpoint.")
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(default=8000, description="Port the HTTP server binds.")
    public_url: str | None = Field(
        default=None, description="URL the hub is reached at, shown in links; default from host."
    )
    ae_title: str = Field(default="HUB", description="The hub's DICOM AE title.")
    access_token_minutes: int = Field(
        default=60, description="Lifetime of a user's bearer (API) access token, in minutes."
    )
    session_idle_minutes: int = Field(
        default=30, description="A browser session ends after this long without requests."
    )
    session_max_hours: int = Field(
        default=12, description="A browser session ends this long after sign-in, used or not."
    )
    session_cookie_secure: bool = Field(
        default=True,
        description="Mark the session cookies Secure (browsers still accept them on "
        "http://localhost and http://127.0.0.1); turn off only for plain-HTTP demos on a LAN.",
    )
    login_ip_max_failures: int = Field(
        default=20, description="Failed logins allowed per client address per window."
    )
    login_ip_window_seconds: int = Field(
        default=300, description="Window of the per-address login throttle, in seconds."
    )
    tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate (chain) to serve HTTPS; with tls_key_file."
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file.")
    max_instance_bytes: int = Field(
        default=2 * 1024**3, description="Largest DICOM instance accepted from a gateway."
    )
    max_request_body_bytes: int = Field(
        default=1024**2,
        description="Largest request body of the JSON/form API (ingest and STOW-RS have their "
        "own limits); larger bodies get 413.",
    )
    sla_stat_minutes: int = Field(default=30, description="Reading SLA for STAT studies.")
    sla_urgent_minutes: int = Field(default=120, description="Reading SLA for urgent studies.")
    sla_routine_minutes: int = Field(default=24 * 60, description="Reading SLA for routine.")
    claim_lease_seconds: int = Field(
        default=600, description="A claim expires this long after its last heartbeat."
    )
    sweep_seconds: float = Field(
        default=15.0,
        description="Interval of the background sweep: expired leases, overdue STAT, auto-assign.",
    )
    auto_assign: bool = Field(
        default=False,
        description="Hand unread studies to the eligible on-duty radiologist with the least "
        "outstanding work (otherwise radiologists take studies with 'next').",
    )
    timezone: str = Field(
        default="Asia/Shanghai", description="Time zone of the statistics' calendar days."
    )
    _known_time_zone = field_validator("timezone")(_time_zone)
    gateway_silence_alarm_seconds: int = Field(
        default=300, description="A gateway silent this long raises an alarm in the admin view."
    )
    workers: int = Field(default=1, description="Number of uvicorn worker processes.")
    max_request_header_bytes: int = Field(
        default=65536,
        ge=8192,
        le=1 << 20,
        description="A request whose headers (request line included) exceed this many bytes is "
        "answered 431 and its connection closed.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the hub cross-origin (CORS), e.g. an OHIF "
        "viewer at https://viewer.example; empty: no cross-origin access.",
    )
    dicomweb_max_request_bytes: int = Field(
        default=4 * 1024**3, description="Largest STOW-RS request body accepted, in bytes."
    )
    report_ca_passphrase: SecretStr | None = Field(
        default=None,
        description="Passphrase the hub CA's and timestamping authority's keys are encrypted "
        "with (data_dir/pki); unset: stored in the clear with file permissions (the demo).",
    )
    report_ca_institution: str | None = Field(
        default=None,
        description="Organisation named in the hub CA and radiologists' certificates when the "
        "CA is created; default: the name of the hub (district) institution.",
    )
    report_tsa_url: str | None = Field(
        default=None,
        description="URL of an external RFC 3161 timestamping service (e.g. a licensed one); "
        "unset: the hub's own in-process TSA.",
    )
    report_critical_categories: list[str] = Field(
        default_factory=lambda: [
            "气胸 pneumothorax",
            "主动脉夹层 aortic dissection",
            "颅内出血 intracranial haemorrhage",
            "消化道穿孔 free air",
            "肺栓塞 pulmonary embolism",
            "张力性气胸 tension pneumothorax",
            "其他 other",
        ],
        description="Categories a critical result (危急值) may be flagged with.",
    )
    report_critical_ack_minutes: int = Field(
        default=30,
        ge=1,
        description="A critical result not acknowledged by the clinic this long after signing "
        "notifies the signing radiologist and the hub admins.",
    )
    report_sign_max_failures: int = Field(
        default=5,
        ge=1,
        description="Wrong signing passwords allowed per user per login_ip_window_seconds "
        "before signing is refused with 429 (like logins).",
    )

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hub.sqlite3').resolve()}"

    def resolved_object_store_dir(self) -> Path:
        return self.object_store_dir or self.data_dir / "objects"


class GatewaySettings(_TomlSettings):
    """Settings of a clinic gateway (``imaging-hub gateway serve``)."""

    model_config = SettingsConfigDict(env_prefix="IMAGING_HUB_GATEWAY_", extra="ignore")
    toml_section: ClassVar[str] = "gateway"

    clinic: str = Field(default="clinic-a", description="Code of the clinic this gateway serves.")
    ae_title: str = Field(default="CLINIC_A", description="AE title of the gateway's SCP.")
    host: str = Field(default="0.0.0.0", description="Address the DICOM SCP binds.")
    dicom_port: int = Field(default=11112, description="Port of the DICOM SCP.")
    allowed_calling_aes: list[str] = Field(
        default_factory=list,
        description="If not empty, only these calling AE titles may associate.",
    )
    extra_storage_sop_classes: list[str] = Field(
        default_factory=list,
        description="Private storage SOP class UIDs to accept besides every standard one.",
    )
    spool_dir: Path = Field(default=Path("var/gateway/spool"), description="Spool directory.")
    hub_url: str = Field(default="http://127.0.0.1:8000", description="Base URL of the hub.")
    hub_token: SecretStr = Field(
        default=SecretStr(""), description="This gateway's clinic token, issued by the hub."
    )
    hub_ca_file: Path | None = Field(
        default=None, description="CA certificate to verify the hub's TLS certificate."
    )
    tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate of the DICOM SCP: with tls_key_file, the SCP speaks DICOM "
        "over TLS (PS3.15 B.9) instead of plain TCP.",
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file.")
    tls_ca_file: Path | None = Field(
        default=None,
        description="With TLS on: modalities must present a certificate signed by this CA.",
    )
    stability_seconds: float = Field(
        default=10.0,
        description="Without an earlier trigger (MPPS COMPLETED, exam done, expected images), "
        "a study is complete once no instance arrived for this long after its associations "
        "ended.",
    )
    retention_hours: float = Field(
        default=168.0,
        ge=0,
        description="Forwarded instances are deleted from the spool this long after the hub "
        "confirmed their study (0: at once). Pending and failed instances are never deleted.",
    )
    scp_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="DICOM SCP worker processes sharing the listening socket and the spool; "
        "1 receives in the main process. The forwarder always runs in the main process.",
    )
    forward: bool = Field(
        default=True,
        description="Forward to the hub; false receives and spools only (ingest benchmarks, "
        "or holding studies while the uplink is known to be down).",
    )
    upload_concurrency: int = Field(default=4, description="Parallel uploads to the hub.")
    transcode_processes: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=0,
        description="Processes transcoding for the WAN ahead of the uploads; 0 transcodes in "
        "the upload threads.",
    )
    retry_initial_seconds: float = Field(default=1.0, description="First retry delay.")
    retry_max_seconds: float = Field(default=300.0, description="Longest retry delay.")
    max_instance_bytes: int = Field(
        default=2 * 1024**3, description="Largest instance the SCP accepts."
    )
    spool_min_free_bytes: int = Field(
        default=1024**3,
        ge=0,
        description="Free-space floor of the spool's file system: below it, new instances are "
        "refused with Out of Resources (0xA700) until forwarding and the retention purge free "
        "space (the index, MPPS steps and reports keep the room left). Size it for the largest "
        "instance the modalities send plus room for SQLite's WAL (docs/gateway.md, Full disk); "
        "0 (with spool_min_free_percent 0) turns the floor off.",
    )
    spool_min_free_percent: float = Field(
        default=0.0,
        ge=0,
        lt=100,
        description="The floor as a percentage of the spool's file system, when larger than "
        "spool_min_free_bytes.",
    )
    transcode: Literal["none", "jpeg-ls", "jpeg2000"] = Field(
        default="jpeg-ls", description="Lossless transcoding of native pixel data for the WAN."
    )
    bandwidth_limit_bytes_per_second: int | None = Field(
        default=None, description="Optional uplink cap."
    )
    heartbeat_seconds: float = Field(default=30.0, description="Interval of hub heartbeats.")
    max_association_seconds: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="A study is never complete while an association carrying it is open; one "
        "open longer than this is logged and no longer holds its studies back.",
    )
    metrics_port: int = Field(
        default=0,
        description="Port of the Prometheus metrics endpoint on the gateway host; 0 disables it.",
    )
    order_sync_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Interval of the order sync from the hub (the Modality Worklist's cache, "
        "orders.sqlite in the spool directory); 0 turns the sync off (C-FIND answers from "
        "whatever the cache holds).",
    )
    mwl_character_sets: dict[str, Literal["ISO_IR 192", "GB18030"]] = Field(
        default_factory=dict,
        description="Character set of the Modality Worklist answers per calling AE title "
        '(e.g. {"CT_ROOM1": "GB18030"}); other modalities get mwl_default_character_set.',
    )
    mwl_default_character_set: Literal["ISO_IR 192", "GB18030"] = Field(
        default="ISO_IR 192",
        description="Character set of the Modality Worklist answers to a calling AE title not "
        "in mwl_character_sets: ISO_IR 192 (UTF-8) or GB18030.",
    )
    # --- reports back at the clinic (dicom_gateway/reports.py, lan_page.py) ---
    pull_reports: bool = Field(
        default=True,
        description="Pull the clinic's signed reports from the hub, keep them in "
        "spool_dir/reports/ and confirm receipt (the study becomes 'delivered').",
    )
    report_poll_wait_seconds: float = Field(
        default=25.0,
        ge=0,
        le=30,
        description="Long-poll wait of the report pull (the hub answers at once when a report "
        "is waiting).",
    )
    report_node: str | None = Field(
        default=None,
        description="Clinic DICOM node that receives each signed report as an Encapsulated PDF "
        "(C-STORE), as AE@host:port; unset: none.",
    )
    reports_keep_days: int = Field(
        default=90,
        ge=1,
        description="Pulled reports are deleted from the gateway this many days after they were "
        "pulled (never while an acknowledgement or a delivery to report_node is waiting, nor "
        "an unacknowledged critical result).",
    )
    staff_sync_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Interval of the sync of the clinic staff's sign-in verifiers (LAN page).",
    )
    lan_page_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the LAN page (reports for clinic staff while the WAN is down); "
        "0 disables it.",
    )
    lan_page_host: str | None = Field(
        default=None, description="Address the LAN page binds; default: host."
    )
    timezone: str = Field(
        default="Asia/Shanghai",
        description="Time zone the LAN page shows times in (the box's own clock may be UTC).",
    )
    _known_time_zone = field_validator("timezone")(_time_zone)
    lan_page_tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate to serve the LAN page over HTTPS."
    )
    lan_page_tls_key_file: Path | None = Field(
        default=None, description="PEM private key of lan_page_tls_cert_file."
    )
