"""Sign a report PDF as PAdES B-LT with pyHanko.

B-LT: a PAdES signature (ETSI.CAdES.detached, SHA-256) with an RFC 3161 signature timestamp
(B-T), and the validation data embedded in the document security store (DSS) in an incremental
update after the signature: the chain and the CRL of the hub CA, which also covers the TSA. So
the file verifies offline, years later, with only the hub's CA certificate.

The signer comes from :mod:`.pki` (:class:`~.pki.ReportSigner`); the hub CA's user key is unlocked
with the radiologist's password, a wrong one raising
:class:`~.pki.InvalidSigningPassword` before anything is produced.
"""

import hashlib
import io
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization

from imaging_hub.errors import ImagingHubError
from imaging_hub.worklist.reports.pki import (
    HubCA,
    HubKeySigner,
    ReportSigner,
    UserCredential,
    ValidationMaterial,
    load_pyhanko,
    off_the_loop,
    signer_display_name,
)
from imaging_hub.worklist.reports.timestamps import timestamper_for

SIGNATURE_FIELD = "ReportSignature"


class _NoFetchingNotice(logging.Filter):
    """Drops pyHanko's warning that revocation data is embedded without fetching: the hub
    hands it its own CRL on purpose, for every signature."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "fetching is not allowed" not in record.getMessage()


logging.getLogger("pyhanko.sign.signers.pdf_signer").addFilter(_NoFetchingNotice())


class SigningFailed(ImagingHubError):
    """The PDF could not be signed (unreadable PDF, signer's chain not valid, TSA failure)."""

    code = "signing_failed"


@dataclass(frozen=True)
class SignedReport:
    """The signed PDF and what the API returns about it."""

    pdf: bytes
    sha256: str
    signed_at: datetime
    signer_name: str
    certificate_serial: int


def validation_context(material: ValidationMaterial, **kwargs: Any) -> Any:
    """A pyHanko ``ValidationContext`` from *material* (revocation checked where declared)."""
    load_pyhanko()
    from asn1crypto import crl as asn1_crl  # type: ignore[import-untyped]
    from asn1crypto import x509 as asn1_x509
    from pyhanko_certvalidator import ValidationContext

    def der(cert: Any) -> Any:
        return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))

    return ValidationContext(
        trust_roots=[der(c) for c in material.trust_roots],
        other_certs=[der(c) for c in material.other_certs],
        crls=[
            asn1_crl.CertificateList.load(c.public_bytes(serialization.Encoding.DER))
            for c in material.crls
        ],
        allow_fetching=material.allow_fetching,
        revocation_mode="hard-fail",
        **kwargs,
    )


def sign_pdf(
    pdf: bytes,
    signer: ReportSigner,
    *,
    timestamper: Any,
    reason: str = "Radiology report signed",
    location: str | None = None,
) -> SignedReport:
    """Sign *pdf* with *signer* as PAdES B-LT, timestamped by *timestamper* (pyHanko
    ``TimeStamper``); returns the signed bytes and their SHA-256."""
    load_pyhanko()
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.misc import PdfError
    from pyhanko.sign import fields, signers
    from pyhanko.sign.general import SigningError

    material = signer.validation_material()
    meta = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        reason=reason,
        location=location,
        name=signer_display_name(signer.certificate),
        embed_validation_info=True,
        validation_context=validation_context(material),
        signer_key_usage={"non_repudiation"},
    )
    signed_at = datetime.now(UTC)
    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
        pdf_signer = signers.PdfSigner(
            meta, signer=signer.pyhanko_signer(), timestamper=timestamper
        )
        out = io.BytesIO()
        off_the_loop(pdf_signer.sign_pdf, writer, output=out)
    except (SigningError, PdfError, ValueError) as exc:
        raise SigningFailed(f"The report could not be signed: {exc}") from exc
    data = out.getvalue()
    return SignedReport(
        pdf=data,
        sha256=hashlib.sha256(data).hexdigest(),
        signed_at=signed_at,
        signer_name=signer_display_name(signer.certificate),
        certificate_serial=signer.certificate.serial_number,
    )


def sign_with_password(
    pdf: bytes,
    credential: UserCredential,
    password: str,
    ca: HubCA,
    *,
    tsa_url: str | None = None,
    location: str | None = None,
) -> SignedReport:
    """The hub's sign path: unlock the radiologist's key with *password* (a wrong one raises
    :class:`~.pki.InvalidSigningPassword`, nothing produced), timestamp with the hub TSA or
    *tsa_url*, sign as PAdES B-LT."""
    signer = HubKeySigner(credential, password, ca)
    return sign_pdf(
        pdf, signer, timestamper=timestamper_for(ca, tsa_url), location=location or ca.institution
    )
