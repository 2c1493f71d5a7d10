"""Radiologists' signing credentials in the database, and the per-process signing runtime.

Each radiologist's certificate is issued by the hub CA lazily, at their first signature: the
password they re-enter is checked against their account password and becomes the password the
new private key is encrypted with (PKCS#8; see docs/reports.md). From then on the password
unlocks the key in memory for one signature.

Password changes:

- the user's own change (``access.sessions.change_own_password``) re-encrypts the same key for
  the new password (:func:`rewrap_for_new_password`): same certificate;
- an administrator's reset cannot decrypt the old key. At the next signature the password
  is right for the account but does not open the key: the old certificate is revoked
  (superseded; reports signed before stay valid, they were timestamped) and a new one issued.
  The same happens for a key that was left encrypted with an old password for any reason.
"""

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging_hub.config import HubSettings
from imaging_hub.worklist.access.accounts import LoginThrottle, verify_password
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import Institution, InstitutionLevel, SigningCredential, User
from imaging_hub.worklist.reports.pki import (
    CertificateRevoked,
    HubCA,
    HubKeySigner,
    InvalidSigningPassword,
    UserCredential,
    ca_directory,
)
from imaging_hub.worklist.reports.timestamps import timestamper_for

log = logging.getLogger(__name__)

CREDENTIAL_ISSUED = "report.credential_issued"  # detail.op: issued, reissued


@dataclass
class ReportsRuntime:
    """What report signing builds once per process: the hub CA (opened or created on first
    use), its timestamper, the signing-password throttle, and the report settings."""

    settings: HubSettings
    sign_throttle: LoginThrottle
    _ca: HubCA | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: HubSettings) -> "ReportsRuntime":
        return cls(
            settings=settings,
            sign_throttle=LoginThrottle(
                max_failures=settings.report_sign_max_failures,
                window=float(settings.login_ip_window_seconds),
            ),
        )

    @property
    def critical_categories(self) -> tuple[str, ...]:
        return tuple(self.settings.report_critical_categories)

    def crl_url(self) -> str:
        base = self.settings.public_url or f"http://{self.settings.host}:{self.settings.port}"
        return f"{base.rstrip('/')}/api/v1/pki/crl.der"

    def ca(self, session: Session) -> HubCA:
        """The hub CA in ``<data_dir>/pki``, created at first use (once per process)."""
        if self._ca is not None:
            return self._ca
        with self._lock:
            if self._ca is None:
                passphrase = self.settings.report_ca_passphrase
                self._ca = HubCA.open_or_create(
                    ca_directory(self.settings.data_dir),
                    institution=self._institution(session),
                    passphrase=passphrase.get_secret_value() if passphrase else None,
                    crl_url=self.crl_url(),
                )
            return self._ca

    def _institution(self, session: Session) -> str:
        if self.settings.report_ca_institution:
            return self.settings.report_ca_institution
        name = session.scalar(
            select(Institution.name)
            .where(Institution.level == InstitutionLevel.district)
            .order_by(Institution.id)
            .limit(1)
        )
        return name or "imaging-hub"

    def timestamper(self, ca: HubCA) -> Any:
        """The hub's TSA (built once, kept in the CA's cache) or the configured external one."""
        return timestamper_for(ca, self.settings.report_tsa_url)


def current_credential(session: Session, user: User) -> SigningCredential | None:
    return session.scalar(
        select(SigningCredential)
        .where(SigningCredential.user_id == user.id, SigningCredential.revoked_at.is_(None))
        .order_by(SigningCredential.id.desc())
        .limit(1)
    )


def as_user_credential(row: SigningCredential, username: str) -> UserCredential:
    return UserCredential(
        username=username,
        certificate_pem=row.certificate_pem.encode("ascii"),
        encrypted_key_pem=row.encrypted_key_pem.encode("ascii"),
    )


def _revoke(ca: HubCA, row: SigningCredential, reason: str, now: datetime) -> None:
    flags = {
        "superseded": x509.ReasonFlags.superseded,
        "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    }
    ca.revoke(int(row.serial), reason=flags.get(reason, x509.ReasonFlags.superseded), when=now)
    row.revoked_at = now
    row.revoke_reason = reason


def signer_for(
    session: Session, caller: Caller, ca: HubCA, *, password: str, now: datetime | None = None
) -> HubKeySigner:
    """The caller's signer, unlocked with *password*.

    Issues the caller's certificate on first use and re-issues it after an administrator's
    password reset (both committed and audited at once, whatever happens to the signature).
    Raises :class:`InvalidSigningPassword` when *password* is not the account's password.
    """
    user = caller.user
    now = now or datetime.now(UTC)
    row = current_credential(session, user)
    if row is not None:
        try:
            return HubKeySigner(as_user_credential(row, user.username), password, ca)
        except InvalidSigningPassword:
            pass  # a wrong password, or a key still locked with an older one: checked below
        except CertificateRevoked:
            pass  # revoked or expired: a new one is issued below if the password is right
    if not password or not verify_password(user.password_hash, password):
        raise InvalidSigningPassword("The signing password is wrong; nothing was signed.")
    op = "issued"
    if row is not None:
        _revoke(ca, row, "superseded", now)
        op = "reissued"
    credential = ca.issue_signing_certificate(
        username=user.username, display_name=user.display_name or user.username, password=password
    )
    session.add(
        SigningCredential(
            user_id=user.id,
            serial=str(credential.serial_number),
            certificate_pem=credential.certificate_pem.decode("ascii"),
            encrypted_key_pem=credential.encrypted_key_pem.decode("ascii"),
            issued_at=now,
        )
    )
    audit.record_for(
        session,
        caller,
        CREDENTIAL_ISSUED,
        object_type="user",
        object_id=user.username,
        detail={"op": op, "serial": str(credential.serial_number)},
    )
    session.commit()
    log.info("signing certificate %s for %s", op, user.username)
    return HubKeySigner(credential, password, ca)


def rewrap_for_new_password(
    session: Session, *, user: User, old_password: str, new_password: str
) -> bool:
    """Re-encrypt the user's signing key for their new password (same certificate), in the
    caller's transaction. False when there is no key or the old password does not open it
    (then the next signature issues a new certificate)."""
    row = current_credential(session, user)
    if row is None:
        return False
    try:
        new = as_user_credential(row, user.username).with_new_password(old_password, new_password)
    except InvalidSigningPassword:
        return False
    row.encrypted_key_pem = new.encrypted_key_pem.decode("ascii")
    return True
