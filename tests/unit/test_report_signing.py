"""PAdES B-LT signing and offline verification, and ``imaging-hub report verify``."""

import hashlib
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from typer.testing import CliRunner

from imaging_hub.cli import app
from imaging_hub.worklist.reports.pdf import render_report_pdf
from imaging_hub.worklist.reports.pki import HubCA, InvalidSigningPassword, Pkcs12Signer
from imaging_hub.worklist.reports.signing import SignedReport, sign_pdf, sign_with_password
from imaging_hub.worklist.reports.timestamps import hub_timestamper
from imaging_hub.worklist.reports.verify import verify_pdf
from tests.report_support import PASSWORD, Pki, make_pki, sample_document


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def signed(pki: Pki) -> SignedReport:
    return sign_with_password(
        render_report_pdf(sample_document()), pki.credential, PASSWORD, pki.ca
    )


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> HubCA:
    return HubCA.create(tmp_path_factory.mktemp("other") / "ca", institution="Other", key_size=2048)


def test_signed_report_verifies_intact_and_trusted(pki: Pki, signed: SignedReport) -> None:
    assert signed.sha256 == hashlib.sha256(signed.pdf).hexdigest()
    assert signed.signer_name == "李医生"
    result = verify_pdf(signed.pdf, [pki.ca.certificate])
    assert result.ok and result.intact and result.trusted and not result.modified
    assert result.signer_name == "李医生" and result.signer_username == "rad1"
    assert result.timestamp_time is not None and result.timestamp_trusted
    assert result.signing_time is not None
    assert abs((result.timestamp_time - result.signing_time).total_seconds()) < 60
    assert result.ltv_embedded  # chain + CRL in the DSS: verifies offline
    assert result.modification_level in ("none", "lta_updates")
    assert result.sha256 == signed.sha256
    assert "intact" in result.summary and "trusted" in result.summary


def test_one_changed_byte_is_detected(pki: Pki, signed: SignedReport) -> None:
    """Any byte of the signed revision (both ranges of /ByteRange) changed → not valid."""
    data = signed.pdf
    found = re.search(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", data)
    assert found is not None
    first_end, second_start = int(found[2]), int(found[3])
    for position in (20, first_end // 3, first_end // 2, first_end - 30, second_start + 5):
        changed = bytearray(data)
        changed[position] ^= 0x01
        result = verify_pdf(bytes(changed), [pki.ca.certificate])
        assert not result.ok, position
        assert result.modified or not result.intact, position


def test_a_different_ca_does_not_trust_it(signed: SignedReport, other_ca: HubCA) -> None:
    result = verify_pdf(signed.pdf, [other_ca.certificate])
    assert result.intact and not result.trusted and not result.ok


def test_wrong_password_signs_nothing(pki: Pki) -> None:
    pdf = render_report_pdf(sample_document("RPT-0009"))
    with pytest.raises(InvalidSigningPassword) as info:
        sign_with_password(pdf, pki.credential, "not-the-password", pki.ca)
    assert info.value.code == "signing_password_wrong"


def test_not_a_signed_pdf(pki: Pki) -> None:
    plain = render_report_pdf(sample_document())
    assert not verify_pdf(plain, [pki.ca.certificate]).ok
    assert not verify_pdf(b"garbage", [pki.ca.certificate]).ok


def test_an_addendum_is_its_own_signed_document(pki: Pki, signed: SignedReport) -> None:
    before = hashlib.sha256(signed.pdf).hexdigest()
    addendum_pdf = render_report_pdf(
        sample_document("RPT-0002", addendum_of="RPT-0001", findings="补充：左侧少量胸腔积液。")
    )
    addendum = sign_with_password(addendum_pdf, pki.credential, PASSWORD, pki.ca)
    assert verify_pdf(addendum.pdf, [pki.ca.certificate]).ok
    assert hashlib.sha256(signed.pdf).hexdigest() == before


def test_a_pkcs12_key_signs_the_same_way(pki: Pki) -> None:
    p12 = pkcs12.serialize_key_and_certificates(
        b"rad1",
        pki.credential.unlock(PASSWORD),
        pki.credential.certificate,
        [pki.ca.certificate],
        serialization.BestAvailableEncryption(b"p12"),
    )
    signer = Pkcs12Signer(
        p12,
        "p12",
        trust_roots=[pki.ca.certificate],
        crls=[pki.ca.current_crl()],
        allow_fetching=False,
    )
    pdf = render_report_pdf(sample_document("RPT-0003"))
    result = sign_pdf(pdf, signer, timestamper=hub_timestamper(pki.ca))
    assert verify_pdf(result.pdf, [pki.ca.certificate]).ok


def test_cli_report_verify(tmp_path: Path, pki: Pki, signed: SignedReport, other_ca: HubCA) -> None:
    runner = CliRunner()
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(pki.ca.certificate_pem)
    other_pem = tmp_path / "other.pem"
    other_pem.write_bytes(other_ca.certificate_pem)
    good = tmp_path / "report.pdf"
    good.write_bytes(signed.pdf)
    bad = tmp_path / "changed.pdf"
    changed = bytearray(signed.pdf)
    changed[len(changed) // 5] ^= 0x01
    bad.write_bytes(bytes(changed))

    ok = runner.invoke(app, ["report", "verify", str(good), "--trust", str(ca_pem)])
    assert ok.exit_code == 0, ok.output
    assert "李医生 (rad1)" in ok.output and "intact" in ok.output and "timestamp:" in ok.output
    modified = runner.invoke(app, ["report", "verify", str(bad), "--trust", str(ca_pem)])
    assert modified.exit_code == 1 and "NOT VALID" in modified.output
    untrusted = runner.invoke(app, ["report", "verify", str(good), "--trust", str(other_pem)])
    assert untrusted.exit_code == 1 and "trusted:        NO" in untrusted.output
    missing = runner.invoke(
        app, ["report", "verify", str(tmp_path / "none.pdf"), "--trust", str(ca_pem)]
    )
    assert missing.exit_code != 0


def test_signing_and_verifying_work_where_an_event_loop_runs(pki: Pki) -> None:
    """pyHanko runs asyncio.run inside: from a thread with a running loop (an async caller, a
    test driving a browser) signing and verifying still work (off the loop, in a thread)."""
    import asyncio
    import concurrent.futures

    async def inside_a_loop() -> tuple[SignedReport, bool]:
        report = sign_with_password(
            render_report_pdf(sample_document()), pki.credential, PASSWORD, pki.ca
        )
        return report, verify_pdf(report.pdf, [pki.ca.certificate]).ok

    # A thread of its own: in the whole suite the main thread may already run a loop (the
    # browser tests' Playwright), where asyncio.run itself would refuse to start.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        report, ok = pool.submit(lambda: asyncio.run(inside_a_loop())).result()
    assert ok
    assert report.pdf.startswith(b"%PDF")
