"""The hub's own certificate authority and the radiologists' signing keys (docs/reports.md).

The CA lives in one directory (mode 0700)::

    ca.crt.pem     the self-signed root (RSA-3072, 20 years): what anyone verifies reports with
    ca.key.pem     its key, PKCS#8 PEM, mode 0600; encrypted with the CA passphrase when the
                   settings give one (production), plain with file permissions otherwise (demo)
    ca.json        institution, CRL distribution point, CRL number
    revoked.json   revoked serials (serial → time, reason)
    crl.der        the latest CRL (re-issued daily, or at once after a revocation)
    tsa/           the timestamping authority's certificate and key (see :mod:`.timestamps`)

A radiologist's credential (:class:`UserCredential`) is a certificate (subject CN = display name,
UID = username, O = the hub institution; digitalSignature + nonRepudiation; EKU documentSigning)
and a PKCS#8 private key encrypted with *the user's own password* (``BestAvailableEncryption``).
The hub never stores that key in the clear: it is unlocked in memory only for one signature, with
the password the radiologist re-enters; a wrong password raises :class:`InvalidSigningPassword`.

Signing goes through the :class:`ReportSigner` protocol: :class:`HubKeySigner` (the hub CA's user
key) or :class:`Pkcs12Signer` (a key and certificate from a licensed CA, as Chinese law asks for
in production). A PKCS#11 token (USB key / HSM) plugs in the same way through
``pyhanko.sign.pkcs11.PKCS11Signer`` (docs/reports.md).
"""

import asyncio
import concurrent.futures
import json
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from imaging_hub.errors import ImagingHubError

#: id-kp-documentSigning (RFC 9336).
DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
#: Microsoft Document Signing: the EKU Adobe Acrobat accepts for document signatures.
MS_DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.4.1.311.10.3.12")

CA_CERT = "ca.crt.pem"
CA_KEY = "ca.key.pem"
CA_META = "ca.json"
REVOKED = "revoked.json"
CRL_FILE = "crl.der"

#: A CRL is valid this long; the hub re-issues it once it is older than CRL_REFRESH.
CRL_VALIDITY = timedelta(days=7)
CRL_REFRESH = timedelta(days=1)
DEFAULT_CRL_URL = "http://localhost:8000/api/v1/pki/crl.der"
#: Where the hub keeps its CA, under its data directory (``<data_dir>/pki``).
CA_SUBDIR = "pki"


def ca_directory(data_dir: Path) -> Path:
    """The hub CA's directory under the hub's *data_dir*."""
    return data_dir / CA_SUBDIR


class PkiError(ImagingHubError):
    """The hub's PKI could not do what was asked (no CA, unreadable key, bad certificate)."""

    code = "pki_error"


class InvalidSigningPassword(ImagingHubError):
    """The password given to unlock a signing key is wrong: nothing was signed."""

    code = "signing_password_wrong"


class CertificateRevoked(PkiError):
    """The signing certificate has been revoked (or has expired): it may not sign any more."""

    code = "certificate_revoked"


T = TypeVar("T")


def load_pyhanko() -> None:
    """Import pyHanko once, without its import-time CryptographyDeprecationWarning about DSA
    (pyHanko imports the DSA key type; the hub never uses DSA)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DSA is deprecated")
        import pyhanko.sign.signers  # noqa: F401


def off_the_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a blocking pyHanko function that runs ``asyncio.run`` inside (signing, validation).

    asyncio.run refuses to start where an event loop is already running in this thread (an async
    caller, a test driving a browser): then *fn* runs in a short-lived thread of its own.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args, **kwargs)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pyhanko") as pool:
        return pool.submit(fn, *args, **kwargs).result()


# --- files -------------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Write *data* to *path* atomically with mode 0600 (keys, and everything beside them)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    _write_private(path, data)
    os.chmod(path, 0o644)


def _encryption(passphrase: bytes | None) -> serialization.KeySerializationEncryption:
    if passphrase:
        return serialization.BestAvailableEncryption(passphrase)
    return serialization.NoEncryption()


def _key_pem(key: PrivateKeyTypes, passphrase: bytes | None) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _encryption(passphrase)
    )


def _load_key(pem: bytes, passphrase: bytes | None) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(pem, password=passphrase or None)
    except (ValueError, TypeError) as exc:
        raise PkiError(
            "The CA key cannot be read: wrong or missing CA passphrase, or a damaged file."
        ) from exc


def name_value(value: str, *, suffix: str = "", limit: int = 64) -> str:
    """*value* + *suffix* cut to *limit* UTF-8 bytes (X.520 upper bound of CN and O): a long
    Chinese institution name is shortened, never refused."""
    room = limit - len(suffix.encode("utf-8"))
    data = value.encode("utf-8")[:room].decode("utf-8", errors="ignore").strip()
    return (data or "-") + suffix


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# --- the CA ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedKey:
    """A certificate with its private key in memory (service keys: the TSA)."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey


class HubCA:
    """The hub's certificate authority, kept in *directory* (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        certificate: x509.Certificate,
        key: rsa.RSAPrivateKey,
        *,
        institution: str,
        crl_url: str,
        passphrase: bytes | None,
    ) -> None:
        self.directory = directory
        self.certificate = certificate
        self._key = key
        self.institution = institution
        self.crl_url = crl_url
        self._passphrase = passphrase
        #: Per-process cache (the hub TSA's timestamper: its key is parsed once).
        self.cache: dict[str, Any] = {}

    # construction

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        institution: str,
        passphrase: str | None = None,
        crl_url: str = DEFAULT_CRL_URL,
        key_size: int = 3072,
        valid_years: int = 20,
        now: datetime | None = None,
    ) -> "HubCA":
        """Create a new CA in *directory* (which must not hold one yet)."""
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        if (directory / CA_CERT).exists() or (directory / CA_KEY).exists():
            raise PkiError(f"A CA already exists in {directory}.")
        start = now or _now()
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name_value(institution)),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, name_value(institution, suffix=" Report Signing CA")
                ),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - timedelta(minutes=5))
            .not_valid_after(start + timedelta(days=365 * valid_years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        secret = passphrase.encode("utf-8") if passphrase else None
        _write_private(directory / CA_KEY, _key_pem(key, secret))
        _write_public(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
        meta = {"institution": institution, "crl_url": crl_url}
        _write_private(directory / CA_META, json.dumps(meta, indent=2).encode())
        _write_private(directory / REVOKED, json.dumps({"crl_number": 0, "revoked": {}}).encode())
        return cls(
            directory, cert, key, institution=institution, crl_url=crl_url, passphrase=secret
        )

    @classmethod
    def load(cls, directory: Path, *, passphrase: str | None = None) -> "HubCA":
        """Open the CA in *directory*; :class:`PkiError` if there is none or its key is locked."""
        try:
            cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
            key_pem = (directory / CA_KEY).read_bytes()
            meta = json.loads((directory / CA_META).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise PkiError(f"No CA in {directory}.") from exc
        secret = passphrase.encode("utf-8") if passphrase else None
        key = _load_key(key_pem, secret)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise PkiError("The CA key is not an RSA key.")
        return cls(
            directory,
            cert,
            key,
            institution=str(meta["institution"]),
            crl_url=str(meta["crl_url"]),
            passphrase=secret,
        )

    @classmethod
    def open_or_create(
        cls,
        directory: Path,
        *,
        institution: str,
        passphrase: str | None = None,
        crl_url: str = DEFAULT_CRL_URL,
    ) -> "HubCA":
        """The CA in *directory*, created on first use (the hub at start, the demo)."""
        if (directory / CA_CERT).exists():
            return cls.load(directory, passphrase=passphrase)
        return cls.create(
            directory, institution=institution, passphrase=passphrase, crl_url=crl_url
        )

    @property
    def certificate_pem(self) -> bytes:
        """The CA certificate as PEM (``GET /api/v1/pki/ca.pem``)."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_passphrase(self) -> bytes | None:
        """The passphrase service keys beside the CA key are stored with (None: file mode)."""
        return self._passphrase

    # issuing

    def _issue(
        self,
        subject: x509.Name,
        public_key: rsa.RSAPublicKey,
        *,
        key_usage: x509.KeyUsage,
        eku: Sequence[ObjectIdentifier],
        eku_critical: bool,
        valid_days: int,
        now: datetime | None,
    ) -> x509.Certificate:
        start = now or _now()
        not_after = min(start + timedelta(days=valid_days), self.certificate.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(eku)), critical=eku_critical)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            full_name=[x509.UniformResourceIdentifier(self.crl_url)],
                            relative_name=None,
                            reasons=None,
                            crl_issuer=None,
                        )
                    ]
                ),
                critical=False,
            )
        )
        return builder.sign(self._key, hashes.SHA256())

    def issue_signing_certificate(
        self,
        *,
        username: str,
        display_name: str,
        password: str,
        valid_days: int = 730,
        key_size: int = 2048,
        now: datetime | None = None,
    ) -> "UserCredential":
        """A new key pair and certificate for radiologist *username*; the key is encrypted with
        *password* (the user's own) and never stored in the clear."""
        if not password:
            raise InvalidSigningPassword("A signing key needs a non-empty password.")
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name_value(self.institution)),
                x509.NameAttribute(NameOID.COMMON_NAME, name_value(display_name)),
                x509.NameAttribute(NameOID.USER_ID, username),
            ]
        )
        cert = self._issue(
            subject,
            key.public_key(),
            key_usage=x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            eku=[DOCUMENT_SIGNING, MS_DOCUMENT_SIGNING],
            eku_critical=False,
            valid_days=valid_days,
            now=now,
        )
        return UserCredential(
            username=username,
            certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
            encrypted_key_pem=_key_pem(key, password.encode("utf-8")),
        )

    def issue_timestamping_certificate(
        self, *, valid_days: int = 3650, now: datetime | None = None
    ) -> IssuedKey:
        """A certificate for the hub's RFC 3161 TSA (EKU timeStamping, critical, RFC 3161 2.3)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name_value(self.institution)),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, name_value(self.institution, suffix=" Timestamping")
                ),
            ]
        )
        cert = self._issue(
            subject,
            key.public_key(),
            key_usage=x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            eku=[ExtendedKeyUsageOID.TIME_STAMPING],
            eku_critical=True,
            valid_days=valid_days,
            now=now,
        )
        return IssuedKey(certificate=cert, key=key)

    # revocation

    def _revocations(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.directory / REVOKED).read_text(encoding="utf-8"))
        return data

    def revoke(
        self,
        certificate: x509.Certificate | int,
        *,
        reason: x509.ReasonFlags = x509.ReasonFlags.superseded,
        when: datetime | None = None,
    ) -> x509.CertificateRevocationList:
        """Revoke a certificate issued by this CA (a user left, a password was reset, a key was
        compromised) and issue a fresh CRL at once, which is returned."""
        serial = certificate if isinstance(certificate, int) else certificate.serial_number
        data = self._revocations()
        data["revoked"][str(serial)] = {"at": (when or _now()).isoformat(), "reason": reason.value}
        _write_private(self.directory / REVOKED, json.dumps(data, indent=2).encode())
        return self.issue_crl(now=when)

    def is_revoked(self, certificate: x509.Certificate) -> bool:
        return str(certificate.serial_number) in self._revocations()["revoked"]

    def issue_crl(self, *, now: datetime | None = None) -> x509.CertificateRevocationList:
        """Issue (and keep in ``crl.der``) a new CRL listing every revoked certificate."""
        start = now or _now()
        data = self._revocations()
        data["crl_number"] = int(data.get("crl_number", 0)) + 1
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(start)
            .next_update(start + CRL_VALIDITY)
            .add_extension(x509.CRLNumber(data["crl_number"]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        for serial, entry in data["revoked"].items():
            revoked = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial))
                .revocation_date(datetime.fromisoformat(entry["at"]))
                .add_extension(x509.CRLReason(x509.ReasonFlags(entry["reason"])), critical=False)
                .build()
            )
            builder = builder.add_revoked_certificate(revoked)
        crl = builder.sign(self._key, hashes.SHA256())
        _write_private(self.directory / REVOKED, json.dumps(data, indent=2).encode())
        _write_public(self.directory / CRL_FILE, crl.public_bytes(serialization.Encoding.DER))
        return crl

    def current_crl(self, *, now: datetime | None = None) -> x509.CertificateRevocationList:
        """The CRL to embed in a signature: the kept one while fresh, else a newly issued one."""
        moment = now or _now()
        try:
            crl = x509.load_der_x509_crl((self.directory / CRL_FILE).read_bytes())
        except (FileNotFoundError, ValueError):
            return self.issue_crl(now=now)
        last, nxt = crl.last_update_utc, crl.next_update_utc
        if nxt is None or last > moment or moment - last >= CRL_REFRESH or nxt <= moment:
            return self.issue_crl(now=now)
        return crl


# --- radiologists' credentials -----------------------------------------------------------------


@dataclass(frozen=True)
class UserCredential:
    """A radiologist's certificate and password-encrypted private key (both PEM; what the
    database or a directory keeps)."""

    username: str
    certificate_pem: bytes
    encrypted_key_pem: bytes = field(repr=False)

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem)

    @property
    def serial_number(self) -> int:
        return self.certificate.serial_number

    def unlock(self, password: str) -> rsa.RSAPrivateKey:
        """The private key, decrypted with *password*; :class:`InvalidSigningPassword` if wrong."""
        if not password:
            raise InvalidSigningPassword("The signing password is wrong.")
        try:
            key = serialization.load_pem_private_key(
                self.encrypted_key_pem, password=password.encode("utf-8")
            )
        except (ValueError, TypeError) as exc:
            raise InvalidSigningPassword("The signing password is wrong.") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise PkiError("The signing key is not an RSA key.")
        return key

    def with_new_password(self, old_password: str, new_password: str) -> "UserCredential":
        """The same key, re-encrypted for *new_password* (the user changed their password).
        An administrator's password reset cannot do this: it issues a new credential instead."""
        if not new_password:
            raise InvalidSigningPassword("A signing key needs a non-empty password.")
        key = self.unlock(old_password)
        return UserCredential(
            username=self.username,
            certificate_pem=self.certificate_pem,
            encrypted_key_pem=_key_pem(key, new_password.encode("utf-8")),
        )

    def save(self, directory: Path) -> None:
        """Keep the credential as ``<username>.crt.pem`` / ``<username>.key.pem`` (0600)."""
        directory.mkdir(parents=True, exist_ok=True)
        _write_public(directory / f"{self.username}.crt.pem", self.certificate_pem)
        _write_private(directory / f"{self.username}.key.pem", self.encrypted_key_pem)

    @classmethod
    def load(cls, directory: Path, username: str) -> "UserCredential":
        try:
            return cls(
                username=username,
                certificate_pem=(directory / f"{username}.crt.pem").read_bytes(),
                encrypted_key_pem=(directory / f"{username}.key.pem").read_bytes(),
            )
        except FileNotFoundError as exc:
            raise PkiError(f"No signing certificate for {username!r}.") from exc


# --- signers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationMaterial:
    """What a signature's chain is validated with at signing time and embedded for LTV."""

    trust_roots: tuple[x509.Certificate, ...]
    other_certs: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    #: Whether pyHanko may fetch CRLs/OCSP over the network (a licensed CA's responders).
    allow_fetching: bool = False


@runtime_checkable
class ReportSigner(Protocol):
    """Whatever signs a report: the hub CA's user key, a PKCS#12 file, a PKCS#11 token."""

    @property
    def certificate(self) -> x509.Certificate:
        """The signer's certificate."""
        ...

    def pyhanko_signer(self) -> Any:
        """A ``pyhanko.sign.signers.Signer`` holding the unlocked key."""
        ...

    def validation_material(self) -> ValidationMaterial:
        """Trust roots, chain and revocation data for the signature's long-term validation."""
        ...


def _asn1_cert(cert: x509.Certificate) -> Any:
    from asn1crypto import x509 as asn1_x509  # type: ignore[import-untyped]

    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _pyhanko_simple_signer(
    cert: x509.Certificate, key: PrivateKeyTypes, chain: Iterable[x509.Certificate]
) -> Any:
    load_pyhanko()
    from asn1crypto import keys as asn1_keys
    from pyhanko.sign.signers import SimpleSigner
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

    class _HeldKeySigner(SimpleSigner):
        """pyHanko's SimpleSigner re-parses (and re-checks) the key for every signature;
        this one signs PKCS#1 v1.5 with the key object it already holds."""

        def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
            mechanism = self.get_signature_mechanism_for_digest(digest_algorithm)
            if isinstance(key, rsa.RSAPrivateKey) and mechanism.signature_algo == (
                "rsassa_pkcs1v15"
            ):
                digest = getattr(hashes, digest_algorithm.upper().replace("-", ""))()
                return key.sign(data, padding.PKCS1v15(), digest)
            result: bytes = super().sign_raw(data, digest_algorithm)
            return result

    return _HeldKeySigner(
        signing_cert=_asn1_cert(cert),
        signing_key=asn1_keys.PrivateKeyInfo.load(der),
        cert_registry=SimpleCertificateStore.from_certs(  # type: ignore[no-untyped-call]
            [_asn1_cert(c) for c in chain]
        ),
    )


class HubKeySigner:
    """A radiologist's key from the hub CA, unlocked with their password (at construction:
    a wrong password raises :class:`InvalidSigningPassword` before anything is produced)."""

    def __init__(self, credential: UserCredential, password: str, ca: HubCA) -> None:
        cert = credential.certificate
        if ca.is_revoked(cert):
            raise CertificateRevoked("This signing certificate has been revoked.")
        if cert.not_valid_after_utc <= datetime.now(UTC):
            raise CertificateRevoked("This signing certificate has expired.")
        self._key = credential.unlock(password)
        self._cert = cert
        self._ca = ca

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    def pyhanko_signer(self) -> Any:
        return _pyhanko_simple_signer(self._cert, self._key, [self._ca.certificate])

    def validation_material(self) -> ValidationMaterial:
        return ValidationMaterial(
            trust_roots=(self._ca.certificate,), crls=(self._ca.current_crl(),)
        )


class Pkcs12Signer:
    """A key and certificate from a PKCS#12 file (e.g. issued by a licensed CA).

    *trust_roots* are that CA's roots; its CRLs/OCSP responses are fetched at signing time
    (``allow_fetching``) unless given in *crls*.
    """

    def __init__(
        self,
        data: bytes,
        passphrase: str,
        *,
        trust_roots: Sequence[x509.Certificate],
        crls: Sequence[x509.CertificateRevocationList] = (),
        allow_fetching: bool = True,
    ) -> None:
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(
                data, passphrase.encode("utf-8") if passphrase else None
            )
        except ValueError as exc:
            raise InvalidSigningPassword("The PKCS#12 password is wrong.") from exc
        if key is None or cert is None:
            raise PkiError("The PKCS#12 file holds no key and certificate.")
        self._key = key
        self._cert = cert
        self._chain = tuple(extra)
        self._material = ValidationMaterial(
            trust_roots=tuple(trust_roots),
            other_certs=self._chain,
            crls=tuple(crls),
            allow_fetching=allow_fetching,
        )

    @classmethod
    def from_file(
        cls, path: Path, passphrase: str, *, trust_roots: Sequence[x509.Certificate], **kw: Any
    ) -> "Pkcs12Signer":
        return cls(path.read_bytes(), passphrase, trust_roots=trust_roots, **kw)

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    def pyhanko_signer(self) -> Any:
        return _pyhanko_simple_signer(self._cert, self._key, self._chain)

    def validation_material(self) -> ValidationMaterial:
        return self._material


def signer_display_name(cert: x509.Certificate) -> str:
    """The subject's common name (the radiologist's display name)."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def signer_username(cert: x509.Certificate) -> str | None:
    """The subject's UID attribute (the hub username), if any."""
    names = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    return str(names[0].value) if names else None


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Certificates from PEM (one or many) or a single DER certificate."""
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]
