"""RFC 3161 timestamps for report signatures: the hub's own TSA, or an external one.

The hub's TSA is in-process: a certificate issued by the hub CA with the critical EKU
timeStamping (RFC 3161 2.3), its key beside the CA's (``<ca dir>/tsa/``, PKCS#8, mode 0600,
encrypted with the CA passphrase when there is one). It answers pyHanko's timestamp requests
directly, without HTTP, so a signature costs no round trip. When the settings name an external
TSA URL (a licensed time-stamping service), pyHanko's ``HTTPTimeStamper`` asks it instead; its
roots must then be among the trust roots a verifier uses.
"""

import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from imaging_hub.worklist.reports.pki import (
    HubCA,
    IssuedKey,
    PkiError,
    _key_pem,
    _load_key,
    _write_private,
    _write_public,
    load_pyhanko,
)

TSA_DIR = "tsa"
TSA_CERT = "tsa.crt.pem"
TSA_KEY = "tsa.key.pem"

#: The hub TSA's policy (TSTInfo.policy): a fixed UUID-derived OID (PS3.5 B.2 style, 2.25.x).
HUB_TSA_POLICY = "2.25.181136403226104393626355358911620773907"


def load_or_create_tsa(ca: HubCA) -> IssuedKey:
    """The hub TSA's certificate and key, issued by *ca* on first use."""
    directory = ca.directory / TSA_DIR
    cert_path, key_path = directory / TSA_CERT, directory / TSA_KEY
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = _load_key(key_path.read_bytes(), ca.key_passphrase)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise PkiError("The TSA key is not an RSA key.")
        return IssuedKey(certificate=cert, key=key)
    issued = ca.issue_timestamping_certificate()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(key_path, _key_pem(issued.key, ca.key_passphrase))
    _write_public(cert_path, issued.certificate.public_bytes(serialization.Encoding.PEM))
    return issued


def _make_hub_timestamper(tsa: IssuedKey, ca_certificate: x509.Certificate) -> Any:
    load_pyhanko()
    from asn1crypto import keys as asn1_keys  # type: ignore[import-untyped]
    from asn1crypto import tsp
    from asn1crypto import x509 as asn1_x509
    from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    class HubTimeStamper(DummyTimeStamper):
        """pyHanko's in-process TSA with the hub's policy OID and a random 128-bit serial."""

        def _build_tst_info(self, message_imprint: Any, dt: datetime, req: Any) -> Any:
            info = {
                "version": "v1",
                "policy": tsp.ObjectIdentifier(HUB_TSA_POLICY),
                "message_imprint": message_imprint,
                "serial_number": secrets.randbits(127) | 1,
                "gen_time": dt,
                "tsa": asn1_x509.GeneralName(name="directory_name", value=self.tsa_cert.subject),
            }
            if req["nonce"].native is not None:
                info["nonce"] = req["nonce"]
            return tsp.TSTInfo(info)

        def _sign_tst_info(self, tst_info_data: bytes, md_algorithm: str, dt: datetime) -> Any:
            # As pyHanko's, but with the key object held (no re-parse and RSA check per stamp).
            from asn1crypto import cms, core
            from pyhanko.sign import general

            attribute: Any = general.simple_cms_attribute
            digest = getattr(hashes, md_algorithm.upper().replace("-", ""))()
            h = hashes.Hash(digest)
            h.update(tst_info_data)
            signed_attrs = cms.CMSAttributes(
                [
                    attribute("content_type", "tst_info"),
                    attribute("signing_time", cms.Time({"utc_time": core.UTCTime(dt)})),
                    attribute("signing_certificate", general.as_signing_certificate(self.tsa_cert)),
                    attribute("message_digest", h.finalize()),
                ]
            )
            signature = tsa.key.sign(signed_attrs.dump(), padding.PKCS1v15(), digest)
            return signature, signed_attrs

    der_key = tsa.key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return HubTimeStamper(
        tsa_cert=asn1_x509.Certificate.load(
            tsa.certificate.public_bytes(serialization.Encoding.DER)
        ),
        tsa_key=asn1_keys.PrivateKeyInfo.load(der_key),
        certs_to_embed=SimpleCertificateStore.from_certs(  # type: ignore[no-untyped-call]
            [asn1_x509.Certificate.load(ca_certificate.public_bytes(serialization.Encoding.DER))]
        ),
    )


def hub_timestamper(ca: HubCA) -> Any:
    """A pyHanko ``TimeStamper`` backed by the hub's own TSA (created on first use; kept in
    the CA object's cache, so its key is read once per process)."""
    if "hub_timestamper" not in ca.cache:
        ca.cache["hub_timestamper"] = _make_hub_timestamper(load_or_create_tsa(ca), ca.certificate)
    return ca.cache["hub_timestamper"]


def external_timestamper(url: str, *, timeout: float = 10.0, auth: Any = None) -> Any:
    """pyHanko's ``HTTPTimeStamper`` for an external RFC 3161 service at *url* (its
    ``requests`` client: synchronous, no aiohttp needed)."""
    load_pyhanko()
    from pyhanko.sign.timestamps.requests_client import HTTPTimeStamper

    return HTTPTimeStamper(url, timeout=int(timeout), auth=auth)  # type: ignore[no-untyped-call]


def timestamper_for(ca: HubCA, external_url: str | None = None) -> Any:
    """The external TSA when *external_url* is configured, else the hub's own."""
    if external_url:
        return external_timestamper(external_url)
    return hub_timestamper(ca)


def tsa_certificate_path(ca_directory: Path) -> Path:
    """Where the hub TSA's certificate is kept (for operators and the verify docs)."""
    return ca_directory / TSA_DIR / TSA_CERT
