"""The S3 layer itself checks who signs and where they may write (SeaweedFS, tests/peers/s3.py).

The hub issues no presigned writes today: gateways upload through the hub's HTTP API, which
checks the clinic (tests/security). The S3 side is proven here on its own, with the identities a
production object store is given: a wrong secret is refused; an identity scoped to
``<bucket>/clinic-a/`` writes there and nowhere else, directly or through a presigned URL it
signed, so even a presigned URL for clinic-a cannot put an object under clinic-b's prefix; a
presigned URL cannot be re-aimed or outlive its expiry; a read-only identity cannot write.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import urllib3
from minio.credentials.credentials import Credentials as MinioCredentials
from minio.error import S3Error
from minio.signer import presign_v4

from imaging_hub.errors import StorageError
from imaging_hub.storage import S3Store
from tests.peers.s3 import SCOPED_BUCKET, Credentials, S3Server, remove_bucket


def _put(url: str, data: bytes) -> tuple[int, str]:
    """PUT *data* to a presigned URL: the HTTP status and the S3 error code (if any)."""
    request = urllib.request.Request(
        url, data=data, method="PUT", headers={"Content-Type": "application/octet-stream"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:
        with exc:
            body = exc.read().decode("utf-8", "replace")
        code = body.split("<Code>", 1)[-1].split("</Code>", 1)[0] if "<Code>" in body else ""
        return exc.code, code


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


class Scoped:
    """Admin view of :data:`SCOPED_BUCKET` under a per-test folder in each clinic's prefix."""

    def __init__(self, server: S3Server) -> None:
        self.server = server
        self.run = uuid.uuid4().hex[:12]
        self.admin = server.store(SCOPED_BUCKET, create_bucket=False)

    def key(self, clinic: str, name: str) -> str:
        return f"{clinic}/{self.run}/{name}"

    def store_of(self, identity: str) -> S3Store:
        return self.server.store(
            SCOPED_BUCKET, create_bucket=False, credentials=self.server.identity(identity)
        )

    def everything(self) -> dict[str, bytes]:
        """Every object of this test anywhere in the bucket (any prefix), with its bytes.

        A key the store would refuse to read (say ``..`` in it) fails the test here.
        """
        return {k: self.admin.get(k) for k in self.admin.list("") if self.run in k}

    def clean(self) -> None:
        for key in list(self.everything()):
            self.admin.delete(key)
        self.admin.close()


@pytest.fixture
def scoped(s3_server: S3Server) -> Iterator[Scoped]:
    view = Scoped(s3_server)
    try:
        yield view
    finally:
        view.clean()


def one_char_off(secret: str) -> str:
    """*secret* with its last character changed (never to itself: a random secret ends in "x"
    one time in 64, and a CI run once met that)."""
    return secret[:-1] + ("y" if secret.endswith("x") else "x")


def test_a_wrong_secret_or_unknown_key_is_refused_and_writes_nothing(
    s3_server: S3Server, scoped: Scoped
) -> None:
    key = scoped.key("clinic-a", "x.dcm")
    forged = [
        Credentials(s3_server.access_key, one_char_off(s3_server.secret_key)),  # admin's
        Credentials(s3_server.identity("clinic-a").access_key, "not-the-secret-0123456789"),
        Credentials("AKNOBODY0000000000", s3_server.secret_key),  # a real secret, unknown key
    ]
    for creds in forged:
        store = scoped.server.store(SCOPED_BUCKET, create_bucket=False, credentials=creds)
        try:
            with pytest.raises(StorageError) as refused:
                store.put(key, b"forged")
            assert "SignatureDoesNotMatch" in str(refused.value) or (
                "InvalidAccessKeyId" in str(refused.value)
            )
            assert creds.secret_key not in str(refused.value)
            with pytest.raises(StorageError):
                list(store.list("clinic-a/"))
            # a presigned URL signed with a wrong secret is refused the same way
            status, code = _put(store.presigned_put_url(key, 60), b"forged")
            assert (status, code) in {(403, "SignatureDoesNotMatch"), (403, "InvalidAccessKeyId")}
        finally:
            store.close()
    assert scoped.everything() == {}


def test_a_presigned_url_for_clinic_a_cannot_write_under_clinic_b(scoped: Scoped) -> None:
    clinic_b_key = scoped.key("clinic-b", "existing.dcm")
    scoped.admin.put(clinic_b_key, b"clinic-b original")
    clinic_a = scoped.store_of("clinic-a")
    try:
        own = scoped.key("clinic-a", "upload.dcm")
        assert _put(clinic_a.presigned_put_url(own, 60), b"clinic-a image") == (200, "")

        # clinic-a's credential signs a URL for clinic-b's prefix: S3 refuses the write
        for target in (scoped.key("clinic-b", "new.dcm"), clinic_b_key):
            assert _put(clinic_a.presigned_put_url(target, 60), b"evil") == (403, "AccessDenied")
        # prefixes are path segments, not string prefixes
        lookalike = f"clinic-a-evil/{scoped.run}/x.dcm"
        assert _put(clinic_a.presigned_put_url(lookalike, 60), b"evil") == (403, "AccessDenied")
        # a valid clinic-a URL re-aimed at clinic-b no longer matches its signature
        reaimed = clinic_a.presigned_put_url(own, 60).replace("/clinic-a/", "/clinic-b/", 1)
        assert "/clinic-b/" in reaimed
        assert _put(reaimed, b"evil") == (403, "SignatureDoesNotMatch")
        # nor can clinic-a read clinic-b's object, presigned or not
        status, _ = _get(clinic_a.presigned_get_url(clinic_b_key, 60))
        assert status == 403
        with pytest.raises(StorageError, match="AccessDenied"):
            clinic_a.get(clinic_b_key)
        with pytest.raises(StorageError, match="AccessDenied"):
            clinic_a.put(scoped.key("clinic-b", "direct.dcm"), b"evil")
    finally:
        clinic_a.close()
    assert scoped.everything() == {
        clinic_b_key: b"clinic-b original",
        scoped.key("clinic-a", "upload.dcm"): b"clinic-a image",
    }


def test_a_dot_dot_key_does_not_escape_the_clinic_prefix(
    s3_server: S3Server, scoped: Scoped
) -> None:
    """S3Store refuses such keys itself; a raw client signing one gets nowhere under clinic-b."""
    with pytest.raises(StorageError):
        scoped.store_of("clinic-a").presigned_put_url(f"clinic-a/../clinic-b/{scoped.run}", 60)
    creds = s3_server.identity("clinic-a")
    for path in (
        f"clinic-a/../clinic-b/{scoped.run}/x.dcm",
        f"clinic-a/%2E%2E/clinic-b/{scoped.run}/y.dcm",
        f"clinic-a/..%2Fclinic-b/{scoped.run}/z.dcm",
    ):
        # signed by hand: the minio client refuses to sign such a key at all
        url = presign_v4(
            method="PUT",
            url=urlsplit(f"http://{s3_server.endpoint}/{SCOPED_BUCKET}/{path}"),
            region=s3_server.region,
            credentials=MinioCredentials(creds.access_key, creds.secret_key),
            date=datetime.now(UTC),
            expires=60,
        ).geturl()
        status, code = _put(url, b"evil")
        assert status in {400, 403}, (path, status, code)  # SeaweedFS: 400 InvalidRequest
    assert not [k for k in scoped.everything() if k.startswith("clinic-b/")]


def test_a_presigned_url_expires(scoped: Scoped) -> None:
    clinic_a = scoped.store_of("clinic-a")
    try:
        url = clinic_a.presigned_put_url(scoped.key("clinic-a", "late.dcm"), 1)
    finally:
        clinic_a.close()
    time.sleep(2.1)  # X-Amz-Date has whole seconds: one second of validity is over after two
    status, code = _put(url, b"late")
    assert status == 403
    assert code in {"AccessDenied", "ExpiredToken", "RequestExpired"}
    assert scoped.everything() == {}


def test_permissions_are_per_bucket(s3_server: S3Server, scoped: Scoped) -> None:
    other = f"test-{uuid.uuid4().hex[:24]}"
    s3_server.store(other).close()  # created by the admin
    try:
        for identity in ("clinic-a", "reader"):
            store = s3_server.store(
                other, create_bucket=False, credentials=s3_server.identity(identity)
            )
            try:
                with pytest.raises(StorageError, match="AccessDenied"):
                    store.put("clinic-a/x.dcm", b"evil")
                status, _ = _put(store.presigned_put_url("clinic-a/y.dcm", 60), b"evil")
                assert status == 403
            finally:
                store.close()
        http = urllib3.PoolManager()
        try:
            raw = s3_server.client(http, s3_server.identity("clinic-a"))
            with pytest.raises(S3Error) as refused:
                raw.make_bucket(f"test-{uuid.uuid4().hex[:24]}")
            assert refused.value.code == "AccessDenied"
            assert list(s3_server.client(http).list_objects(other, recursive=True)) == []
        finally:
            http.clear()

        # the read-only identity reads the scoped bucket and writes nothing there
        key = scoped.key("clinic-a", "read-me.dcm")
        scoped.admin.put(key, b"readable")
        reader = scoped.store_of("reader")
        try:
            assert reader.get(key) == b"readable"
            assert key in list(reader.list(f"clinic-a/{scoped.run}/"))
            with pytest.raises(StorageError, match="AccessDenied"):
                reader.put(key, b"overwritten")
            with pytest.raises(StorageError, match="AccessDenied"):
                reader.delete(key)
        finally:
            reader.close()
        assert scoped.everything() == {key: b"readable"}
    finally:
        remove_bucket(s3_server, other)
