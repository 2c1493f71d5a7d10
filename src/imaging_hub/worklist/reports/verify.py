"""Verify a signed report PDF offline (pyHanko), against a trust root such as the hub CA.

No network: the chain and the CRL come from the file's document security store (PAdES B-LT) and
the given trust roots. The signer's chain is validated at the time of the embedded signature
timestamp (when there is one), so a report still verifies after the radiologist's certificate
has expired or the CRL has gone stale; a certificate revoked *before* that time fails.

An addendum is a signed PDF of its own (the whole document), verified exactly like a report: the
first signature of the file is the report's; anything appended after it other than validation
data (DSS/timestamps) counts as a modification.
"""

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from imaging_hub.worklist.reports.pki import (
    load_pyhanko,
    off_the_loop,
    signer_display_name,
    signer_username,
)


@dataclass(frozen=True)
class VerificationResult:
    """What a verifier needs to know about a signed report."""

    #: The signing radiologist (certificate CN) and hub username (certificate UID).
    signer_name: str | None
    signer_username: str | None
    #: The signing time the signer claims (CMS signing-time attribute).
    signing_time: datetime | None
    #: The time of the embedded RFC 3161 signature timestamp (None: no timestamp).
    timestamp_time: datetime | None
    #: The signed bytes are unchanged and the signature is cryptographically valid.
    intact: bool
    #: The signer's chain (and the timestamp's) leads to a trust root and is not revoked.
    trusted: bool
    #: Whether the timestamp itself is intact and trusted (False when there is none).
    timestamp_trusted: bool
    #: How much of the file the signature covers: ``entire_file``, ``entire_revision``
    #: (validation data appended after it), ``contiguous_block_from_start``, ``unclear``, or
    #: ``none`` (no signature / unreadable).
    coverage: str
    #: What was changed after signing: ``none``, ``lta_updates`` (only validation data),
    #: ``form_filling``, ``annotations``, ``other``, or ``unknown``.
    modification_level: str
    #: Anything other than validation data changed or added after the signature.
    modified: bool
    #: Validation data (certificates, CRLs) is embedded, so the file verifies offline.
    ltv_embedded: bool
    signature_count: int
    #: SHA-256 of the file as given.
    sha256: str
    summary: str

    @property
    def ok(self) -> bool:
        """Intact, unmodified and trusted: the only verdict on which ``report verify`` exits 0."""
        return self.intact and self.trusted and not self.modified


def _failed(data: bytes, reason: str, *, count: int = 0) -> VerificationResult:
    return VerificationResult(
        signer_name=None,
        signer_username=None,
        signing_time=None,
        timestamp_time=None,
        intact=False,
        trusted=False,
        timestamp_trusted=False,
        coverage="none",
        modification_level="unknown",
        modified=True,
        ltv_embedded=False,
        signature_count=count,
        sha256=hashlib.sha256(data).hexdigest(),
        summary=reason,
    )


def _timestamp_time(embedded_sig: Any) -> datetime | None:
    """gen_time of the signature timestamp token in the CMS unsigned attributes."""
    try:
        attrs = embedded_sig.signer_info["unsigned_attrs"]
        if attrs.native is None:
            return None
        for attr in attrs:
            if attr["type"].native == "signature_time_stamp_token":
                token = attr["values"][0]
                tst_info = token["content"]["encap_content_info"]["content"].parsed
                value = tst_info["gen_time"].native
                return value if isinstance(value, datetime) else None
    except (KeyError, ValueError, TypeError, AttributeError):
        return None
    return None


def verify_pdf(data: bytes, trust_roots: Sequence[x509.Certificate]) -> VerificationResult:
    """Verify the (first) signature of *data* against *trust_roots*, with no network access."""
    load_pyhanko()
    from asn1crypto import x509 as asn1_x509  # type: ignore[import-untyped]
    from pyhanko.pdf_utils.misc import PdfError
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.validation.dss import DocumentSecurityStore
    from pyhanko.sign.validation.errors import NoDSSFoundError, SignatureValidationError
    from pyhanko_certvalidator import ValidationContext

    roots = [
        asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in trust_roots
    ]
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        signatures = list(reader.embedded_signatures)
    except (PdfError, ValueError, KeyError, TypeError, IndexError) as exc:
        return _failed(data, f"Not a readable PDF: {exc}.")
    if not signatures:
        return _failed(data, "The file holds no signature.")
    sig = signatures[0]
    ts_time = _timestamp_time(sig)

    kwargs: dict[str, Any] = {
        "trust_roots": roots,
        "allow_fetching": False,
        "revocation_mode": "hard-fail",
        "retroactive_revinfo": True,
    }
    if ts_time is not None:
        kwargs["moment"] = ts_time
    try:
        dss = DocumentSecurityStore.read_dss(reader)
        ltv = bool(dss.crls or dss.ocsps)
        signer_vc = dss.as_validation_context(kwargs)
        ts_vc = dss.as_validation_context(kwargs)
    except NoDSSFoundError:
        ltv = False
        signer_vc = ValidationContext(**kwargs)
        ts_vc = ValidationContext(**kwargs)
    except (PdfError, ValueError, KeyError, TypeError) as exc:
        return _failed(data, f"The embedded validation data is damaged: {exc}.")

    try:
        status = off_the_loop(validate_pdf_signature, sig, signer_vc, ts_validation_context=ts_vc)
    except (SignatureValidationError, PdfError, ValueError, KeyError, TypeError) as exc:
        return _failed(data, f"The signature cannot be validated: {exc}.", count=len(signatures))

    cert = x509.load_der_x509_certificate(status.signing_cert.dump())
    coverage = status.coverage.name.lower() if status.coverage is not None else "unclear"
    level = status.modification_level
    level_name = level.name.lower() if level is not None else "unknown"
    intact = bool(status.intact and status.valid)
    modified = (
        not intact
        or level_name not in ("none", "lta_updates")
        or coverage
        not in (
            "entire_file",
            "entire_revision",
        )
    )
    if status.docmdp_ok is False:
        modified = True
    ts_status = status.timestamp_validity
    ts_trusted = bool(
        ts_status is not None and ts_status.intact and ts_status.valid and ts_status.trusted
    )
    trusted = bool(status.trusted) and (ts_status is None or ts_trusted)
    name = signer_display_name(cert)
    parts = [
        f"Signed by {name}",
        "intact" if intact and not modified else "MODIFIED after signing",
        "trusted" if trusted else "NOT trusted by the given CA",
    ]
    if ts_status is not None:
        parts.append(f"timestamp {ts_status.timestamp.isoformat()}")
    else:
        parts.append("no timestamp")
    if not ltv:
        parts.append("no embedded revocation data")
    return VerificationResult(
        signer_name=name,
        signer_username=signer_username(cert),
        signing_time=status.signer_reported_dt,
        timestamp_time=ts_status.timestamp if ts_status is not None else None,
        intact=intact,
        trusted=trusted,
        timestamp_trusted=ts_trusted,
        coverage=coverage,
        modification_level=level_name,
        modified=modified,
        ltv_embedded=ltv,
        signature_count=len(signatures),
        sha256=hashlib.sha256(data).hexdigest(),
        summary="; ".join(parts) + ".",
    )
