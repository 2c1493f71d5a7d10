"""One ObjectStore contract, run on every backend; plus key confinement and key-builder rules.

The S3 backend runs against a real S3 server on loopback (``s3_store``: SeaweedFS, with
signatures and per-bucket / per-prefix permissions checked; tests/peers/s3.py).
"""

from __future__ import annotations

import io
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from imaging_hub.errors import InvalidUidError, ObjectNotFound, StorageError
from imaging_hub.storage import (
    FilesystemStore,
    ObjectStore,
    S3Store,
    instance_key,
    open_store,
    report_key,
)
from tests.peers.s3 import S3Server

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
SOP = "1.2.826.0.1.3680043.8.498.3"
FIVE_MB = 5 * 1024 * 1024 + 123  # just over one S3 multipart part

HOSTILE_KEYS = [
    "../x",
    "a/../../x",
    "/etc/passwd",
    "a//b",
    "a/",
    "a\\b",
    "..\\x",
    "a\x00b",
    "a/./b",
    ".",
    "",
    "x" * 300,
    "a/" * 600 + "b",
]


class ReadTracker(io.RawIOBase):
    """A source stream that records the largest single read request it was asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._inner = io.BytesIO(data)
        self.largest_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        self.largest_read = max(self.largest_read, len(buffer))
        return self._inner.readinto(buffer)

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size >= 0:
            self.largest_read = max(self.largest_read, size)
        else:
            self.largest_read = max(self.largest_read, len(self._inner.getbuffer()))
        return self._inner.read(size)


def as_binary(stream: io.RawIOBase) -> BinaryIO:
    return stream  # type: ignore[return-value]


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "filesystem":
        yield FilesystemStore(tmp_path / "objects")
    else:
        s3: S3Store = request.getfixturevalue("s3_store")
        yield s3


class TestObjectStoreContract:
    """Every backend behaves the same; the hub and gateway cannot tell them apart."""

    def test_implements_the_protocol(self, store: ObjectStore) -> None:
        assert isinstance(store, ObjectStore)

    def test_put_get_round_trip_is_byte_identical(self, store: ObjectStore) -> None:
        key = instance_key("clinic-a", STUDY, SERIES, SOP)
        data = bytes(range(256)) * 17
        store.put(key, data)
        assert store.get(key) == data
        assert store.size(key) == len(data)
        assert store.exists(key)

    def test_empty_object(self, store: ObjectStore) -> None:
        store.put("clinic-a/empty.dcm", b"")
        assert store.exists("clinic-a/empty.dcm")
        assert store.get("clinic-a/empty.dcm") == b""
        assert store.size("clinic-a/empty.dcm") == 0
        assert list(store.iter_chunks("clinic-a/empty.dcm")) == []

    def test_put_stream_of_five_megabytes_reads_in_parts(self, store: ObjectStore) -> None:
        data = os.urandom(FIVE_MB)
        source = ReadTracker(data)
        store.put_stream("clinic-a/big.dcm", as_binary(source), len(data))
        assert store.size("clinic-a/big.dcm") == FIVE_MB
        assert store.get("clinic-a/big.dcm") == data
        assert 0 < source.largest_read < FIVE_MB, "put_stream read the whole object at once"

    def test_put_stream_stores_exactly_length_bytes(self, store: ObjectStore) -> None:
        store.put_stream("clinic-a/part.bin", io.BytesIO(b"0123456789"), 4)
        assert store.get("clinic-a/part.bin") == b"0123"

    def test_short_stream_fails_and_keeps_the_previous_object(self, store: ObjectStore) -> None:
        store.put("clinic-a/x.dcm", b"previous")
        with pytest.raises(StorageError):
            store.put_stream("clinic-a/x.dcm", io.BytesIO(b"short"), 100)
        assert store.get("clinic-a/x.dcm") == b"previous"
        assert list(store.list("clinic-a/")) == ["clinic-a/x.dcm"]

    def test_overwrite_is_idempotent_by_key(self, store: ObjectStore) -> None:
        key = report_key("clinic-a", STUDY, "report-1.pdf")
        store.put(key, b"first")
        store.put(key, b"first")
        assert store.get(key) == b"first"
        store.put(key, b"second, longer")
        assert store.get(key) == b"second, longer"
        assert store.size(key) == len(b"second, longer")
        assert list(store.list(f"clinic-a/{STUDY}/")) == [key]

    def test_delete(self, store: ObjectStore) -> None:
        store.put("clinic-a/d.dcm", b"x")
        store.put("clinic-a/keep.dcm", b"y")
        store.delete("clinic-a/d.dcm")
        assert not store.exists("clinic-a/d.dcm")
        with pytest.raises(ObjectNotFound):
            store.size("clinic-a/d.dcm")
        store.delete("clinic-a/d.dcm")  # deleting a missing object is not an error
        store.delete("clinic-a/never-existed.dcm")
        assert store.get("clinic-a/keep.dcm") == b"y"
        assert list(store.list("clinic-a/")) == ["clinic-a/keep.dcm"]

    def test_list_is_filtered_by_prefix_and_lexically_ordered(self, store: ObjectStore) -> None:
        keys = ["a/b/c", "ab/x", "a/b.dcm", "a/a", "a/b/a", "a/B", "b/a", "a/b-1/z"]
        for index, key in enumerate(keys):
            store.put(key, str(index).encode())
        inside_a = sorted(k for k in keys if k.startswith("a/"))
        assert list(store.list("a/")) == inside_a
        assert inside_a == ["a/B", "a/a", "a/b-1/z", "a/b.dcm", "a/b/a", "a/b/c"]
        assert list(store.list("a/b")) == ["a/b-1/z", "a/b.dcm", "a/b/a", "a/b/c"]
        assert list(store.list("a")) == [*inside_a, "ab/x"]
        assert list(store.list("")) == sorted(keys)
        assert list(store.list("nothing/")) == []
        assert list(store.list("a/b/c")) == ["a/b/c"]

    def test_missing_key_raises_object_not_found(self, store: ObjectStore) -> None:
        missing = instance_key("clinic-b", STUDY, SERIES, SOP)
        assert not store.exists(missing)
        with pytest.raises(ObjectNotFound):
            store.get(missing)
        with pytest.raises(ObjectNotFound):
            store.size(missing)
        with pytest.raises(ObjectNotFound):
            store.open(missing)
        with pytest.raises(ObjectNotFound):
            store.iter_chunks(missing)  # raises when called, before the first chunk

    def test_iter_chunks_reassembles(self, store: ObjectStore) -> None:
        data = os.urandom(10_001)
        store.put("clinic-a/chunks.dcm", data)
        chunks = list(store.iter_chunks("clinic-a/chunks.dcm", chunk_size=1000))
        assert b"".join(chunks) == data
        assert len(chunks) == 11
        assert all(len(chunk) <= 1000 for chunk in chunks)
        assert all(chunks)

    def test_open_streams(self, store: ObjectStore) -> None:
        data = os.urandom(300_000)
        store.put("clinic-a/stream.dcm", data)
        stream = store.open("clinic-a/stream.dcm")
        with stream:
            assert stream.read(128) == data[:128]
            rest = bytearray()
            while chunk := stream.read(65536):
                rest += chunk
        assert stream.closed
        assert bytes(rest) == data[128:]

    def test_read_range(self, store: ObjectStore) -> None:
        data = os.urandom(600_000)
        key = "clinic-a/range.dcm"
        store.put(key, data)
        assert store.read_range(key, 0, 10) == data[:10]
        assert store.read_range(key, 1234, 524_288) == data[1234 : 1234 + 524_288]
        assert store.read_range(key, 599_990, 100) == data[599_990:]  # short at the end
        assert store.read_range(key, 600_000, 10) == b""
        assert store.read_range(key, 5, 0) == b""
        with pytest.raises(StorageError):
            store.read_range(key, -1, 10)
        with pytest.raises(ObjectNotFound):
            store.read_range("clinic-b/missing.dcm", 0, 10)

    def test_open_closed_early_does_not_break_the_store(self, store: ObjectStore) -> None:
        data = os.urandom(2_000_000)
        store.put("clinic-a/early.dcm", data)
        for _ in range(3):
            with store.open("clinic-a/early.dcm") as stream:
                assert stream.read(10) == data[:10]
        assert store.get("clinic-a/early.dcm") == data

    @pytest.mark.parametrize("key", HOSTILE_KEYS)
    def test_hostile_keys_are_refused(self, store: ObjectStore, key: str) -> None:
        with pytest.raises(StorageError):
            store.put(key, b"evil")
        with pytest.raises(StorageError):
            store.get(key)
        assert list(store.list("")) == []


class TestFilesystemConfinement:
    """Nothing a key says can make the filesystem store touch a file outside its root."""

    @pytest.mark.parametrize("key", HOSTILE_KEYS)
    def test_hostile_key_writes_nothing_outside_root(self, tmp_path: Path, key: str) -> None:
        root = tmp_path / "root"
        store = FilesystemStore(root)
        for operation in (
            lambda: store.put(key, b"evil"),
            lambda: store.put_stream(key, io.BytesIO(b"evil"), 4),
            lambda: store.get(key),
            lambda: store.open(key),
            lambda: store.size(key),
            lambda: store.exists(key),
            lambda: store.delete(key),
        ):
            with pytest.raises(StorageError):
                operation()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
        assert list(root.rglob("*")) == []

    def test_dot_dot_prefix_is_refused_by_list(self, tmp_path: Path) -> None:
        (tmp_path / "secret").write_bytes(b"s")
        store = FilesystemStore(tmp_path / "root")
        with pytest.raises(StorageError):
            list(store.list("../"))
        with pytest.raises(StorageError):
            list(store.list("/"))

    def test_symlink_planted_under_root_is_not_followed(self, tmp_path: Path) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret.dcm").write_bytes(b"secret")
        store = FilesystemStore(tmp_path / "root")
        (store.root / "clinic-a").symlink_to(outside, target_is_directory=True)
        with pytest.raises(StorageError):
            store.get("clinic-a/secret.dcm")
        with pytest.raises(StorageError):
            store.read_range("clinic-a/secret.dcm", 0, 3)
        with pytest.raises(StorageError):
            store.put("clinic-a/new.dcm", b"x")
        assert sorted(p.name for p in outside.iterdir()) == ["secret.dcm"]
        assert list(store.list("")) == []

    def test_symlinked_object_is_refused(self, tmp_path: Path) -> None:
        outside = tmp_path / "secret.dcm"
        outside.write_bytes(b"secret")
        store = FilesystemStore(tmp_path / "root")
        store.put("c/a.dcm", b"1")
        (store.root / "c" / "link.dcm").symlink_to(outside)
        for read in (store.get, lambda key: store.read_range(key, 0, 3)):
            with pytest.raises(StorageError) as refused:
                read("c/link.dcm")
            assert not isinstance(refused.value, ObjectNotFound)

    def test_no_temporary_files_are_left_behind(self, tmp_path: Path) -> None:
        store = FilesystemStore(tmp_path / "root")
        store.put("c/a.dcm", b"1")
        store.put("c/a.dcm", b"2")
        with pytest.raises(StorageError):
            store.put_stream("c/a.dcm", io.BytesIO(b""), 10)
        assert sorted(p.name for p in (store.root / "c").iterdir()) == ["a.dcm"]
        assert store.get("c/a.dcm") == b"2"

    def test_key_colliding_with_a_directory_is_a_storage_error(self, tmp_path: Path) -> None:
        store = FilesystemStore(tmp_path / "root")
        store.put("c/a/b.dcm", b"1")
        assert not store.exists("c/a")
        with pytest.raises(ObjectNotFound):
            store.get("c/a")
        with pytest.raises(ObjectNotFound):
            store.read_range("c/a", 0, 1)
        with pytest.raises(ObjectNotFound):
            store.read_range("c/a/b.dcm/x", 0, 1)
        with pytest.raises(StorageError):
            store.put("c/a", b"2")
        with pytest.raises(StorageError):
            store.put("c/a/b.dcm/x", b"3")
        assert store.get("c/a/b.dcm") == b"1"


class TestOpenStore:
    def test_filesystem(self, tmp_path: Path) -> None:
        store = open_store("filesystem", root=tmp_path / "s")
        assert isinstance(store, FilesystemStore)
        store.put("k", b"v")
        assert (tmp_path / "s" / "k").read_bytes() == b"v"

    def test_s3(self, s3_store: S3Store, s3_server: S3Server) -> None:
        # Reuse the peer's bucket through the factory, the way settings would open it.
        opened = open_store(
            "s3",
            endpoint=s3_store.endpoint,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            bucket=s3_store.bucket,
            region="us-east-1",
        )
        assert isinstance(opened, S3Store)
        try:
            opened.put("k", b"v")
        finally:
            opened.close()
        assert s3_store.get("k") == b"v"

    def test_unknown_kind_and_bad_options(self, tmp_path: Path) -> None:
        with pytest.raises(StorageError, match="filesystem, s3"):
            open_store("ftp")
        with pytest.raises(StorageError):
            open_store("filesystem")
        with pytest.raises(StorageError):
            open_store("s3", endpoint="127.0.0.1:1", bucket="b-1", access_key="a")


class TestS3Specifics:
    def test_presigned_urls_work_over_plain_http(self, s3_store: S3Store) -> None:
        put_url = s3_store.presigned_put_url("clinic-a/up.dcm", 60)
        request = urllib.request.Request(
            put_url,
            data=b"uploaded",
            method="PUT",
            # urllib would otherwise send a form content type; an upload is octets.
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        assert s3_store.get("clinic-a/up.dcm") == b"uploaded"
        get_url = s3_store.presigned_get_url("clinic-a/up.dcm", 60)
        with urllib.request.urlopen(get_url, timeout=10) as response:
            assert response.read() == b"uploaded"
        assert "X-Amz-Expires=60" in get_url
        with pytest.raises(StorageError):
            s3_store.presigned_get_url("clinic-a/up.dcm", 0)
        with pytest.raises(StorageError):
            s3_store.presigned_put_url("../x", 60)

    def test_errors_never_contain_the_secret_key(self, s3_store: S3Store) -> None:
        secret = "very-secret-value-0123456789"
        store = S3Store(
            endpoint="127.0.0.1:1",  # nothing listens on port 1
            access_key="ak",
            secret_key=secret,
            bucket="missing-bucket",
        )
        try:
            with pytest.raises(StorageError) as caught:
                store.get("clinic-a/x.dcm")
        finally:
            store.close()
        assert secret not in str(caught.value)
        assert secret not in repr(store)
        assert str(caught.value).endswith(".")

    def test_missing_bucket_is_a_storage_error_not_not_found(self, s3_server: S3Server) -> None:
        store = S3Store(
            endpoint=s3_server.endpoint,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            bucket="no-such-bucket-here",
            region="us-east-1",
        )
        try:
            with pytest.raises(StorageError, match="does not exist") as caught:
                store.get("clinic-a/x.dcm")
            assert not isinstance(caught.value, ObjectNotFound)
        finally:
            store.close()


class TestKeyBuilders:
    """``instance_key`` / ``report_key`` (storage/base.py) validate before building a key."""

    def test_valid_keys(self) -> None:
        assert (
            instance_key("clinic-a", STUDY, SERIES, SOP) == f"clinic-a/{STUDY}/{SERIES}/{SOP}.dcm"
        )
        assert (
            report_key("clinic-a", STUDY, "report-1.pdf")
            == f"clinic-a/{STUDY}/reports/report-1.pdf"
        )
        assert instance_key("c1", "1" * 64, "2", "3").split("/")[1] == "1" * 64

    @pytest.mark.parametrize(
        "uid",
        ["../..", "..", "1" * 65, "", "1.2.abc", "1..2", ".1", "1.", "1/2", "1.2\x00", " 1.2"],
    )
    @pytest.mark.parametrize("position", [0, 1, 2])
    def test_invalid_uids_are_refused(self, uid: str, position: int) -> None:
        uids = [STUDY, SERIES, SOP]
        uids[position] = uid
        with pytest.raises(InvalidUidError):
            instance_key("clinic-a", *uids)

    @pytest.mark.parametrize("uid", ["../..", "1" * 65, "", "x"])
    def test_report_key_refuses_invalid_study_uid(self, uid: str) -> None:
        with pytest.raises(InvalidUidError):
            report_key("clinic-a", uid, "report-1.pdf")

    @pytest.mark.parametrize(
        "clinic", ["", "Clinic-A", "../x", "..", "a/b", "-a", "a_b", "a" * 64, "clinic a", "é"]
    )
    def test_bad_clinic_codes_are_refused(self, clinic: str) -> None:
        with pytest.raises(StorageError):
            instance_key(clinic, STUDY, SERIES, SOP)
        with pytest.raises(StorageError):
            report_key(clinic, STUDY, "report-1.pdf")

    @pytest.mark.parametrize(
        "name", ["", "..", "../x", "a/b", ".hidden", "a\\b", "x" * 129, "a..b"]
    )
    def test_bad_report_names_are_refused(self, name: str) -> None:
        with pytest.raises(StorageError):
            report_key("clinic-a", STUDY, name)
