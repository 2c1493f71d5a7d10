"""Backup of a running hub and restore into an empty one (``imaging-hub admin backup|restore``).

A backup is a directory::

    DIR/database.sqlite3 | DIR/database.pgdump   the database snapshot (taken first)
    DIR/pki/...                                    the hub CA and TSA (keys as encrypted as live)
    DIR/objects/<key>                              every object the snapshot references, by key
    DIR/SHA256SUMS                                 SHA-256 of every file above (``sha256sum -c``)
    DIR/manifest.json                              written LAST, atomically: a backup is complete
                                                   exactly when it has one

Consistency: the database snapshot is one transaction (:mod:`imaging_hub.worklist.db.dump`);
the objects copied are the ones *that snapshot* references (instances and signed report PDFs),
read from the live store after it. The hub writes an object before the row that points at it and
never deletes one, so each is there; objects written after the snapshot are not copied.
Each copied object is hashed while it is copied and compared with the SHA-256 its row records (a
difference is reported: changed after the snapshot by a re-send, or damaged in the store).

Restore checks the whole backup first (manifest, SHA256SUMS, every file's SHA-256) and that the
target hub is empty (no row in any table, no object, no CA), and changes nothing when either
fails. It then copies the objects (read back and hashed from the target store), the CA, and the
database last (SQLite backup API / pg_restore), upgrades it to the current schema, and appends
its ``admin.restore`` event to the restored audit chain, which it then verifies.

Both are audited: ``admin.backup`` (``detail.op`` started — inside the snapshot —, completed or
failed) and ``admin.restore``. Console only: whoever runs them holds the hub's configuration.
"""

import contextlib
import hashlib
import io
import json
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, func, select, text, union
from sqlalchemy.exc import SQLAlchemyError

from imaging_hub import __version__
from imaging_hub.config import HubSettings
from imaging_hub.errors import Forbidden, ImagingHubError, ObjectNotFound, StorageError
from imaging_hub.storage import ObjectStore, open_store
from imaging_hub.storage.filesystem import FilesystemStore, validate_key
from imaging_hub.worklist.access.caller import Caller, Operator
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db import dump
from imaging_hub.worklist.db.migrate import alembic_config, upgrade
from imaging_hub.worklist.db.models import AuditEvent, AuditHead, Instance, Report, Study, User
from imaging_hub.worklist.db.session import make_engine, make_session_factory, session_scope
from imaging_hub.worklist.reports.pki import ca_directory

log = logging.getLogger(__name__)

FORMAT = "imaging-hub-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
OBJECTS = "objects"
PKI = "pki"
DATABASE_FILES = {"sqlite": "database.sqlite3", "postgresql": "database.pgdump"}
#: The snapshot's object keys and recorded SHA-256, while the backup runs (removed at the end).
KEYS = ".keys.tmp"

ACTION_BACKUP = "admin.backup"  # detail.op: started, completed, failed
ACTION_RESTORE = "admin.restore"  # detail.op: restored

CHUNK = 1 << 20


class BackupError(ImagingHubError):
    """A backup or a restore could not be done; nothing was restored."""

    code = "backup_failed"


class BackupIncomplete(BackupError):
    """The directory holds no complete backup (no manifest: interrupted, or not a backup)."""

    code = "backup_incomplete"


class BackupCorrupt(BackupError):
    """A file of the backup is missing or differs from its recorded SHA-256."""

    code = "backup_corrupt"


class BackupIncompatible(BackupError):
    """The backup cannot be restored here (newer format or schema, other database kind)."""

    code = "backup_incompatible"


class RestoreTargetNotEmpty(BackupError):
    """The hub to restore into already holds data; restore only fills an empty hub."""

    code = "restore_target_not_empty"


#: ``progress(stage, done, total)``: called as work advances (total 0 when unknown).
Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True)
class BackupResult:
    directory: Path
    manifest: dict[str, Any]
    #: Objects whose bytes differ from the SHA-256 the snapshot records (copied as found).
    changed_objects: list[str] = field(default_factory=list)

    @property
    def objects(self) -> int:
        return int(self.manifest["objects"]["count"])

    @property
    def bytes(self) -> int:
        return int(self.manifest["objects"]["bytes"])


@dataclass(frozen=True)
class RestoreResult:
    manifest: dict[str, Any]
    objects: int
    bytes: int
    from_revision: str
    to_revision: str
    audit_events: int


# --- helpers -----------------------------------------------------------------------------------


def _require_console(caller: Caller) -> None:
    if not isinstance(caller.principal, Operator):
        raise Forbidden("Backups are made and restored at the hub's console only.")


def open_hub_store(settings: HubSettings, *, create_bucket: bool = False) -> ObjectStore:
    """The hub's object store from its settings, through :func:`imaging_hub.storage.open_store`."""
    if settings.object_store == "s3":
        return open_store(
            "s3",
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            bucket=settings.s3_bucket,
            secure=settings.s3_secure,
            create_bucket=create_bucket,
        )
    return open_store("filesystem", root=settings.resolved_object_store_dir())


def _close(store: ObjectStore) -> None:
    close = getattr(store, "close", None)
    if callable(close):
        close()


class _HashingReader(io.RawIOBase):
    """Reads through to *raw*, hashing and counting what passes."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.sha256.update(data)
        self.count += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- backup ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Snapshot:
    revision: str
    counts: dict[str, int]
    audit_last_id: int
    audit_last_hash: str
    keys: int


def _read_snapshot(conn: Connection, keys_path: Path) -> _Snapshot:
    """What the snapshot holds: schema revision, counts, audit head, and (to *keys_path*) the
    key and recorded SHA-256 of every object it references, in key order."""
    revision = str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())
    counts = {
        name: int(conn.execute(select(func.count()).select_from(model)).scalar_one())
        for name, model in (
            ("studies", Study),
            ("instances", Instance),
            ("users", User),
            ("audit_events", AuditEvent),
        )
    }
    counts["signed_reports"] = int(
        conn.execute(
            select(func.count()).select_from(Report).where(Report.object_key != "")
        ).scalar_one()
    )
    # Gateways hold reports by the hub's id: after a restore, ids above this one are reused.
    counts["reports_max_id"] = int(conn.execute(select(func.max(Report.id))).scalar() or 0)
    head = conn.execute(select(AuditHead.last_id, AuditHead.last_hash)).first()
    referenced = union(
        select(Instance.object_key.label("key"), Instance.sha256.label("sha256")),
        select(Report.object_key.label("key"), Report.sha256.label("sha256")).where(
            Report.object_key != ""
        ),
    ).subquery()
    rows = conn.execution_options(stream_results=True, yield_per=2000).execute(
        select(referenced.c.key, referenced.c.sha256).order_by(referenced.c.key)
    )
    written = 0
    previous = None
    with keys_path.open("w", encoding="utf-8") as out:
        for key, sha256 in rows:
            if key == previous:
                continue
            previous = key
            validate_key(key)
            out.write(f"{sha256}\t{key}\n")
            written += 1
    return _Snapshot(
        revision=revision,
        counts=counts,
        audit_last_id=int(head[0]) if head else 0,
        audit_last_hash=str(head[1]) if head else audit.GENESIS,
        keys=written,
    )


def _prepare_directory(directory: Path) -> None:
    if directory.exists():
        if not directory.is_dir():
            raise BackupError(f"{directory} exists and is not a directory.")
        if any(directory.iterdir()):
            raise BackupError(
                f"{directory} is not empty: a backup goes into a new or empty directory "
                "(an older backup is never overwritten)."
            )
        directory.chmod(0o700)
    else:
        directory.mkdir(mode=0o700, parents=True)


def _audit(settings: HubSettings, caller: Caller, action: str, **detail: Any) -> None:
    engine = make_engine(settings.resolved_database_url())
    try:
        with session_scope(make_session_factory(engine)) as session:
            audit.record_for(session, caller, action, object_type="backup", detail=detail)
    finally:
        engine.dispose()


def backup(
    settings: HubSettings,
    directory: Path,
    caller: Caller,
    *,
    progress: Progress = _no_progress,
    pg_bin: Path | None = None,
    link_dest: Path | None = None,
) -> BackupResult:
    """Back up the (running) hub of *settings* into the new or empty *directory*.

    With *link_dest* (an earlier complete backup on the same file system), an object whose key
    and SHA-256 are the same there is hard-linked from it (after its bytes are checked) instead
    of copied from the store: nightly backups then cost the new objects only.
    """
    _require_console(caller)
    directory = Path(directory).absolute()
    url = settings.resolved_database_url()
    kind = dump.kind_of(url)
    for inside in (settings.resolved_object_store_dir(), settings.data_dir):
        if settings.object_store == "s3" and inside != settings.data_dir:
            continue
        if directory.resolve().is_relative_to(Path(inside).resolve()):
            raise BackupError(
                f"{directory} is inside the hub's data directory or object store: put backups "
                "on another disk (a copy next to what it protects is lost with it)."
            )
    earlier = _earlier_objects(link_dest) if link_dest is not None else {}
    _prepare_directory(directory)
    created_at = _now()
    _audit(settings, caller, ACTION_BACKUP, op="started", directory=str(directory))
    try:
        result = _backup(settings, directory, kind, created_at, progress, pg_bin, earlier)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            code = exc.code if isinstance(exc, ImagingHubError) else type(exc).__name__
            _audit(
                settings, caller, ACTION_BACKUP, op="failed", directory=str(directory), error=code
            )
        raise
    _audit(
        settings,
        caller,
        ACTION_BACKUP,
        op="completed",
        directory=str(directory),
        objects=result.objects,
        bytes=result.bytes,
        audit_last_id=result.manifest["audit"]["last_id"],
    )
    return result


def _backup(
    settings: HubSettings,
    directory: Path,
    kind: str,
    created_at: str,
    progress: Progress,
    pg_bin: Path | None,
    earlier: dict[str, tuple[str, Path]],
) -> BackupResult:
    url = settings.resolved_database_url()
    database_file = directory / DATABASE_FILES[kind]
    keys_path = directory / KEYS
    progress("database", 0, 1)
    pg_major: int | None = None
    try:
        if kind == "sqlite":
            dump.sqlite_snapshot(url, database_file)
            reader = dump.read_only_sqlite(database_file)
            try:
                with reader.connect() as conn:
                    snapshot = _read_snapshot(conn, keys_path)
            finally:
                reader.dispose()
        else:
            engine = make_engine(url)
            try:
                with engine.connect() as conn:
                    tools = dump.pg_tools(conn, pg_bin)
                pg_major = tools.server_major
                with dump.pg_snapshot(engine) as (conn, snapshot_id):
                    snapshot = _read_snapshot(conn, keys_path)
                    dump.pg_dump(tools, url, snapshot_id, database_file)
            finally:
                engine.dispose()
    except SQLAlchemyError as exc:
        raise BackupError(f"The database could not be read: {type(exc).__name__}.") from exc
    progress("database", 1, 1)
    log.debug("database snapshot taken: %s objects referenced", snapshot.keys)

    sums_tmp = directory / f".{SUMS}.tmp"
    changed: list[str] = []
    missing = 0
    first_missing = ""
    reused = 0
    total_bytes = 0
    files = 0
    with sums_tmp.open("w", encoding="utf-8") as sums:
        sums.write(f"{_sha256_file(database_file)}  {database_file.name}\n")
        files += 1
        for path, digest in _copy_pki(ca_directory(settings.data_dir), directory / PKI):
            sums.write(f"{digest}  {path}\n")
            files += 1
        store = open_hub_store(settings)
        target = FilesystemStore(directory / OBJECTS)
        try:
            with keys_path.open(encoding="utf-8") as keys:
                for done, line in enumerate(keys, start=1):
                    recorded, key = line.rstrip("\n").split("\t", 1)
                    try:
                        linked = _link_earlier(earlier.get(key), recorded, directory / OBJECTS, key)
                        if linked is not None:
                            digest, size = recorded, linked
                            reused += 1
                        else:
                            digest, size = _copy_object(store, key, target, key)
                    except ObjectNotFound:
                        missing += 1
                        first_missing = first_missing or key
                        continue
                    if digest != recorded:
                        changed.append(key)
                        log.warning("object %s differs from the SHA-256 its row records", key)
                    sums.write(f"{digest}  {OBJECTS}/{key}\n")
                    files += 1
                    total_bytes += size
                    if done % 200 == 0 or done == snapshot.keys:
                        progress("objects", done, snapshot.keys)
        finally:
            _close(store)
        sums.flush()
        os.fsync(sums.fileno())
    if missing:
        raise BackupError(
            f"{missing} object(s) the database references are missing from the object "
            f"store (the first: {first_missing}); the hub's store is damaged. This backup is "
            "incomplete (no manifest) and cannot be restored."
        )
    sums_path = directory / SUMS
    os.replace(sums_tmp, sums_path)
    keys_path.unlink()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hub_version": __version__,
        "alembic_revision": snapshot.revision,
        "database": {"kind": kind, "file": database_file.name, "pg_server_major": pg_major},
        "object_store": {"kind": settings.object_store},
        "created_at": created_at,
        "completed_at": _now(),
        "counts": snapshot.counts,
        "audit": {"last_id": snapshot.audit_last_id, "last_hash": snapshot.audit_last_hash},
        "objects": {"count": snapshot.keys, "bytes": total_bytes, "linked": reused},
        "files": files,
        "sha256sums": _sha256_file(sums_path),
        "changed_objects": changed[:100],
        "changed_objects_count": len(changed),
    }
    _write_atomically(
        directory / MANIFEST,
        json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n",
    )
    return BackupResult(directory=directory, manifest=manifest, changed_objects=changed)


def _copy_object(
    source: ObjectStore, key: str, target: ObjectStore, target_key: str
) -> tuple[str, int]:
    """Copy one object, hashing it on the way; its SHA-256 and size."""
    size = source.size(key)
    with source.open(key) as stream:
        reader = _HashingReader(stream)
        target.put_stream(target_key, cast(BinaryIO, reader), size)
    if reader.count != size:
        raise StorageError(f"Object {key} changed size while it was copied.")
    return reader.sha256.hexdigest(), size


def _earlier_objects(link_dest: Path) -> dict[str, tuple[str, Path]]:
    """key -> (SHA-256, file) of the objects of the earlier complete backup *link_dest*."""
    link_dest = Path(link_dest).absolute()
    try:
        manifest = read_manifest(link_dest)
    except BackupError as exc:
        raise BackupError(f"--link-dest {link_dest} is not a complete backup: {exc}") from exc
    prefix = f"{OBJECTS}/"
    return {
        entry.path[len(prefix) :]: (entry.sha256, link_dest / entry.path)
        for entry in _entries(link_dest, manifest)
        if entry.path.startswith(prefix)
    }


def _link_earlier(
    earlier: tuple[str, Path] | None, recorded: str, objects: Path, key: str
) -> int | None:
    """Hard-link the earlier backup's copy of *key* when it is the object the snapshot records
    and its bytes still hash to it; its size, or None (then the object is copied)."""
    if earlier is None or earlier[0] != recorded:
        return None
    source = earlier[1]
    try:
        if source.is_symlink() or not source.is_file() or _sha256_file(source) != recorded:
            log.warning("the earlier backup's copy of %s is damaged: copying it afresh", key)
            return None
        out = objects / key
        out.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, out)
        _fsync_dir(out.parent)
        return out.stat().st_size
    except OSError:  # another file system (EXDEV), or no hard links there: copy instead
        return None


def _copy_pki(source: Path, target: Path) -> Iterator[tuple[str, str]]:
    """Copy the CA directory (regular files only, private modes); ``(relative path, sha256)``."""
    if not source.is_dir():
        return
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if (
            path.is_symlink()
            or not path.is_file()
            or any(p.startswith(".") for p in relative.parts)
        ):
            continue
        out = target / relative
        out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = path.read_bytes()
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(out.parent)
        yield f"{PKI}/{relative.as_posix()}", hashlib.sha256(data).hexdigest()


# --- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    sha256: str
    path: str  # relative to the backup directory


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of the backup in *directory*; BackupIncomplete without one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BackupIncomplete(f"{directory} is not a directory holding a backup.")
    path = directory / MANIFEST
    if not path.is_file():
        raise BackupIncomplete(
            f"{directory} holds no {MANIFEST}: the backup is incomplete (it was interrupted, "
            "failed or is still running) or this is not a backup. It cannot be restored; "
            "make a new backup."
        )
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise BackupCorrupt(f"{path} is not a readable manifest.") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupCorrupt(f"{path} is not the manifest of an imaging-hub backup.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BackupIncompatible(
            f"The backup's format version {version!r} is newer than this hub reads "
            f"({FORMAT_VERSION}): restore it with the hub version that made it "
            f"({manifest.get('hub_version')}) or newer."
        )
    try:
        kind = manifest["database"]["kind"]
        if manifest["database"]["file"] != DATABASE_FILES[kind]:
            raise KeyError("file")
        int(manifest["files"])
        int(manifest["objects"]["count"])
        str(manifest["alembic_revision"])
        str(manifest["sha256sums"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupCorrupt(f"{path} lacks a required field or has a wrong one ({exc}).") from exc
    return manifest


def _entries(directory: Path, manifest: dict[str, Any]) -> Iterator[_Entry]:
    allowed_database = manifest["database"]["file"]
    with (directory / SUMS).open(encoding="utf-8") as sums:
        for number, line in enumerate(sums, start=1):
            digest, sep, path = line.rstrip("\n").partition("  ")
            if not sep or len(digest) != 64 or not _safe_path(path, allowed_database):
                raise BackupCorrupt(f"{SUMS} line {number} is malformed.")
            yield _Entry(digest, path)


def _safe_path(path: str, database_file: str) -> bool:
    if path == database_file:
        return True
    head, _, rest = path.partition("/")
    if head not in (OBJECTS, PKI) or not rest:
        return False
    try:
        validate_key(rest)
    except StorageError:
        return False
    return True


def verify_backup(directory: Path, *, progress: Progress = _no_progress) -> dict[str, Any]:
    """Check a backup without changing anything: its manifest, SHA256SUMS and the SHA-256 of
    every file. The manifest, or BackupIncomplete / BackupCorrupt / BackupIncompatible."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    sums_path = directory / SUMS
    if not sums_path.is_file() or _sha256_file(sums_path) != manifest["sha256sums"]:
        raise BackupCorrupt(f"{SUMS} is missing or differs from the one the manifest records.")
    total = int(manifest["files"])
    bad: list[str] = []
    count = 0
    has_database = False
    for entry in _entries(directory, manifest):
        count += 1
        has_database = has_database or entry.path == manifest["database"]["file"]
        path = directory / entry.path
        if path.is_symlink() or not path.is_file():
            bad.append(f"{entry.path} is missing or not a regular file")
        elif _sha256_file(path) != entry.sha256:
            bad.append(f"{entry.path} differs from its SHA-256")
        if count % 200 == 0 or count == total:
            progress("verify", count, total)
    if count != total or not has_database:
        raise BackupCorrupt(
            f"{SUMS} lists {count} files, the manifest {total}; or the database is not listed."
        )
    if bad:
        raise BackupCorrupt(
            f"{len(bad)} file(s) of the backup are damaged or missing: {'; '.join(bad[:5])}. "
            "The backup cannot be restored."
        )
    return manifest


# --- restore -----------------------------------------------------------------------------------


def _check_revision(revision: str, url: str) -> None:
    script = ScriptDirectory.from_config(alembic_config(url))
    try:
        known = script.get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an unknown revision
        known = False
    if not known:
        raise BackupIncompatible(
            f"The backup's database is at schema revision {revision}, which this hub version "
            f"({__version__}) does not know: restore it with the hub version that made it or "
            "a newer one."
        )


def _database_is_new(url: str) -> bool:
    """A SQLite file that does not exist yet (nothing to open, and nothing to create now)."""
    return dump.kind_of(url) == "sqlite" and not dump.sqlite_path(url).exists()


def _store_holds_objects(settings: HubSettings) -> bool:
    if settings.object_store == "filesystem":
        root = settings.resolved_object_store_dir()
        if not root.is_dir():
            return False
    store = open_hub_store(settings)
    try:
        return next(iter(store.list("")), None) is not None
    except StorageError:
        if settings.object_store == "s3":
            return False  # no bucket yet: the restore creates it
        raise
    finally:
        _close(store)


def _emptiness(settings: HubSettings) -> list[str]:
    """What makes the target hub non-empty (empty list: it is empty). Creates nothing."""
    found: list[str] = []
    url = settings.resolved_database_url()
    if not _database_is_new(url):
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                tables = dump.used_tables(conn)
        except SQLAlchemyError as exc:
            raise BackupError(
                f"The target database cannot be reached or read: {type(exc).__name__}."
            ) from exc
        finally:
            engine.dispose()
        if tables:
            found.append(f"the database has rows in {', '.join(tables[:6])}")
    if _store_holds_objects(settings):
        found.append("the object store holds objects")
    pki = ca_directory(settings.data_dir)
    if pki.is_dir() and any(p.is_file() for p in pki.rglob("*")):
        found.append(f"a hub CA exists in {pki}")
    return found


def restore(
    settings: HubSettings,
    directory: Path,
    caller: Caller,
    *,
    progress: Progress = _no_progress,
    pg_bin: Path | None = None,
) -> RestoreResult:
    """Restore the backup in *directory* into the EMPTY hub of *settings*."""
    _require_console(caller)
    directory = Path(directory).absolute()
    manifest = verify_backup(directory, progress=progress)
    url = settings.resolved_database_url()
    kind = dump.kind_of(url)
    if manifest["database"]["kind"] != kind:
        raise BackupIncompatible(
            f"The backup holds a {manifest['database']['kind']} database; this hub is "
            f"configured for {kind}. Restore into a hub with the same database kind."
        )
    _check_revision(str(manifest["alembic_revision"]), url)
    tools = None
    if kind == "postgresql":
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                tools = dump.pg_tools(conn, pg_bin)
        except SQLAlchemyError as exc:
            raise BackupError(
                f"The target database cannot be reached: {type(exc).__name__}."
            ) from exc
        finally:
            engine.dispose()
    found = _emptiness(settings)
    if found:
        raise RestoreTargetNotEmpty(
            "The target hub is not empty: "
            + "; ".join(found)
            + ". Restore only fills an empty hub (a new database and an empty object store); "
            "nothing was changed."
        )
    try:
        return _fill(settings, directory, manifest, caller, kind, tools, progress)
    except (ImagingHubError, OSError, KeyboardInterrupt) as exc:
        why = "it was interrupted." if isinstance(exc, KeyboardInterrupt) else str(exc)
        raise BackupError(
            f"The restore stopped part-way: {why} The target hub now holds part of the backup: "
            "empty it (a new database, an empty object store, no data_dir/pki) before "
            "restoring again."
        ) from exc


def _fill(
    settings: HubSettings,
    directory: Path,
    manifest: dict[str, Any],
    caller: Caller,
    kind: str,
    tools: dump.PgTools | None,
    progress: Progress,
) -> RestoreResult:
    """Copy the objects, the CA, then the database into the (checked) empty hub."""
    url = settings.resolved_database_url()
    store = open_hub_store(settings, create_bucket=True)
    try:
        objects, total_bytes = _restore_objects(directory, manifest, store, progress)
    finally:
        _close(store)
    _restore_pki(directory, manifest, ca_directory(settings.data_dir))
    progress("database", 0, 1)
    database_file = directory / manifest["database"]["file"]
    try:
        if kind == "sqlite":
            dump.sqlite_restore(database_file, url)
        else:
            assert tools is not None
            engine = make_engine(url)
            try:
                with engine.begin() as conn:
                    dump.drop_all_tables(conn)
            finally:
                engine.dispose()
            dump.pg_restore(tools, database_file, url)
        engine = make_engine(url)
        try:
            upgrade(engine)
            with engine.connect() as conn:
                revision = str(
                    conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
                )
            with session_scope(make_session_factory(engine)) as session:
                audit.record_for(
                    session,
                    caller,
                    ACTION_RESTORE,
                    object_type="backup",
                    detail={
                        "op": "restored",
                        "directory": str(directory),
                        "backup_created_at": manifest.get("created_at"),
                        "from_revision": manifest["alembic_revision"],
                        "to_revision": revision,
                        "objects": objects,
                    },
                )
            with session_scope(make_session_factory(engine)) as session:
                chain = audit.verify_chain(session)
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        raise BackupError(
            f"The restored database could not be opened or upgraded: {type(exc).__name__}."
        ) from exc
    progress("database", 1, 1)
    return RestoreResult(
        manifest=manifest,
        objects=objects,
        bytes=total_bytes,
        from_revision=str(manifest["alembic_revision"]),
        to_revision=revision,
        audit_events=chain.events,
    )


def _restore_objects(
    directory: Path, manifest: dict[str, Any], store: ObjectStore, progress: Progress
) -> tuple[int, int]:
    source = FilesystemStore(directory / OBJECTS)
    total = int(manifest["objects"]["count"])
    done = 0
    total_bytes = 0
    prefix = f"{OBJECTS}/"
    for entry in _entries(directory, manifest):
        if not entry.path.startswith(prefix):
            continue
        key = entry.path[len(prefix) :]
        digest, size = _copy_object(source, key, store, key)
        if digest != entry.sha256:
            raise BackupCorrupt(f"{entry.path} changed while it was restored.")
        readback = hashlib.sha256()
        for chunk in store.iter_chunks(key):
            readback.update(chunk)
        if readback.hexdigest() != entry.sha256:
            raise BackupError(f"Object {key} reads back from the target store differently.")
        done += 1
        total_bytes += size
        if done % 200 == 0 or done == total:
            progress("objects", done, total)
    return done, total_bytes


def _restore_pki(directory: Path, manifest: dict[str, Any], target: Path) -> None:
    prefix = f"{PKI}/"
    for entry in _entries(directory, manifest):
        if not entry.path.startswith(prefix):
            continue
        out = target / entry.path[len(prefix) :]
        out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = (directory / entry.path).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise BackupCorrupt(f"{entry.path} changed while it was restored.")
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(out, stat.S_IRUSR | stat.S_IWUSR)
