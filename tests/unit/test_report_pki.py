"""The hub CA: files and permissions, radiologists' certificates, encrypted keys, CRL, signers."""

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from imaging_hub.worklist.reports.pki import (
    DOCUMENT_SIGNING,
    CertificateRevoked,
    HubCA,
    HubKeySigner,
    InvalidSigningPassword,
    Pkcs12Signer,
    PkiError,
    ReportSigner,
    UserCredential,
)
from imaging_hub.worklist.reports.timestamps import load_or_create_tsa, timestamper_for
from tests.report_support import PASSWORD, make_pki


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_ca_lives_in_a_private_directory(tmp_path: Path) -> None:
    ca = HubCA.create(tmp_path / "ca", institution="Hub", key_size=2048)
    assert mode(tmp_path / "ca") == 0o700
    assert mode(tmp_path / "ca" / "ca.key.pem") == 0o600
    assert b"ENCRYPTED" not in (tmp_path / "ca" / "ca.key.pem").read_bytes()
    assert ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    again = HubCA.load(tmp_path / "ca")
    assert again.certificate == ca.certificate
    with pytest.raises(PkiError):
        HubCA.create(tmp_path / "ca", institution="Hub")


def test_a_ca_passphrase_encrypts_the_ca_and_tsa_keys(tmp_path: Path) -> None:
    ca = HubCA.create(tmp_path / "ca", institution="Hub", passphrase="s3cret", key_size=2048)
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "ca" / "ca.key.pem").read_bytes()
    load_or_create_tsa(ca)
    tsa_key = tmp_path / "ca" / "tsa" / "tsa.key.pem"
    assert b"ENCRYPTED PRIVATE KEY" in tsa_key.read_bytes() and mode(tsa_key) == 0o600
    with pytest.raises(PkiError):
        HubCA.load(tmp_path / "ca", passphrase="wrong")
    with pytest.raises(PkiError):
        HubCA.load(tmp_path / "ca")
    assert HubCA.load(tmp_path / "ca", passphrase="s3cret").certificate == ca.certificate
    with pytest.raises(PkiError):
        HubCA.load(tmp_path / "nothing")


def test_a_radiologist_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    cert = pki.credential.certificate
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "李医生"
    assert subject.get_attributes_for_oid(NameOID.USER_ID)[0].value == "rad1"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "城关区影像中心"
    assert cert.issuer == pki.ca.certificate.subject
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.content_commitment
    assert not usage.value.key_cert_sign
    assert DOCUMENT_SIGNING in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    # The key is stored encrypted (PKCS#8) and opens only with the user's password.
    assert pki.credential.encrypted_key_pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
    key = pki.credential.unlock(PASSWORD)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    for wrong in ("", "wrong", PASSWORD + " "):
        with pytest.raises(InvalidSigningPassword) as info:
            pki.credential.unlock(wrong)
        assert info.value.code == "signing_password_wrong"


def test_a_changed_password_rewraps_the_same_key(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    moved = pki.credential.with_new_password(PASSWORD, "new password")
    with pytest.raises(InvalidSigningPassword):
        moved.unlock(PASSWORD)
    assert (
        moved.unlock("new password").private_numbers()
        == pki.credential.unlock(PASSWORD).private_numbers()
    )
    moved.save(tmp_path / "users")
    assert mode(tmp_path / "users" / "rad1.key.pem") == 0o600
    assert UserCredential.load(tmp_path / "users", "rad1") == moved


def test_the_tsa_certificate_is_for_timestamping_only(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    tsa = load_or_create_tsa(pki.ca)
    eku = tsa.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    assert load_or_create_tsa(pki.ca).certificate == tsa.certificate  # kept, not re-issued
    assert type(timestamper_for(pki.ca, "http://tsa.invalid/")).__name__.endswith("HTTPTimeStamper")


def test_revoking_lists_the_serial_in_a_fresh_crl_and_stops_signing(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    first = pki.ca.current_crl()
    assert pki.ca.current_crl().public_bytes(serialization.Encoding.DER) == first.public_bytes(
        serialization.Encoding.DER
    )  # kept while fresh
    assert HubKeySigner(pki.credential, PASSWORD, pki.ca)
    crl = pki.ca.revoke(pki.credential.certificate)
    assert crl.get_revoked_certificate_by_serial_number(pki.credential.serial_number)
    assert crl.is_signature_valid(pki.ca.certificate.public_key())  # type: ignore[arg-type]
    assert pki.ca.current_crl().public_bytes(serialization.Encoding.DER) == crl.public_bytes(
        serialization.Encoding.DER
    )
    with pytest.raises(CertificateRevoked):
        HubKeySigner(pki.credential, PASSWORD, pki.ca)


def test_signers_follow_the_protocol(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    signer = HubKeySigner(pki.credential, PASSWORD, pki.ca)
    assert isinstance(signer, ReportSigner)
    with pytest.raises(InvalidSigningPassword):
        HubKeySigner(pki.credential, "nope", pki.ca)
    p12 = pkcs12.serialize_key_and_certificates(
        b"rad1",
        pki.credential.unlock(PASSWORD),
        pki.credential.certificate,
        [pki.ca.certificate],
        serialization.BestAvailableEncryption(b"p12-pass"),
    )
    from_file = Pkcs12Signer(p12, "p12-pass", trust_roots=[pki.ca.certificate])
    assert isinstance(from_file, ReportSigner)
    assert from_file.certificate == pki.credential.certificate
    with pytest.raises(InvalidSigningPassword):
        Pkcs12Signer(p12, "wrong", trust_roots=[pki.ca.certificate])
