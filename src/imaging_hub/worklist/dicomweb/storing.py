"""STOW-RS domain (PS3.18 10.5): store received parts through the gateway's registration path.

Each part is validated and registered alone by :func:`register_instance` (same checks, same
object keys, same idempotency as instances from a clinic gateway); a refused part stores
nothing and is reported with a Failure Reason (PS3.4 Annex B.2.3, PS3.18 Table 10.5.3-1).
"""

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy.orm import Session

from imaging_hub.dicom.attributes import read_dataset
from imaging_hub.dicom.checks import check_received_instance
from imaging_hub.dicom.from_json import BulkData, json_sop_uids, part10_from_json
from imaging_hub.dicom.vocabulary import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    named_sop_uids,
)
from imaging_hub.errors import Conflict, InvalidDicomError, InvalidRequest, StorageError
from imaging_hub.storage import ObjectStore
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import Institution
from imaging_hub.worklist.dicomweb.multipart import ReceivedPart, parse_media_type
from imaging_hub.worklist.studies.registration import StudyMismatch, register_instance

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"


@dataclass
class StowResult:
    stored: list[tuple[str, str, str, str]] = field(
        default_factory=list
    )  # class, sop, study, series
    failed: list[tuple[str, str, int]] = field(default_factory=list)  # class, sop, reason

    @property
    def status_code(self) -> int:
        """200 all stored, 202 some failed, 409 none stored (PS3.18 10.5.3)."""
        if not self.failed:
            return 200
        return 202 if self.stored else 409


def _uids(body: IO[bytes]) -> tuple[str, str]:
    """(SOP Class UID, SOP Instance UID) for the response, best effort."""
    try:
        body.seek(0)
        ds = read_dataset(body.read(1 << 20), stop_before_pixels=True)
        return named_sop_uids(ds)
    except Exception:  # the part is not readable DICOM: the response names no UIDs
        return "", ""
    finally:
        body.seek(0)


def store_parts(
    session: Session,
    *,
    store: ObjectStore,
    clinic: Institution,
    parts: Sequence[ReceivedPart],
    study_instance_uid: str | None = None,
) -> StowResult:
    """Store each application/dicom part for *clinic*; report every refusal with a reason."""
    result = StowResult()
    for index, part in enumerate(parts):
        media_type, _ = parse_media_type(part.content_type)
        if part.too_large:
            log.info("STOW part %d refused: larger than the instance limit", index)
            result.failed.append(("", "", OUT_OF_RESOURCES))
            continue
        sop_class, sop_uid = _uids(part.body)
        if media_type != "application/dicom":
            log.info("STOW part %d refused: content type %r", index, media_type)
            result.failed.append((sop_class, sop_uid, CANNOT_UNDERSTAND))
            continue
        _register(
            session,
            store=store,
            clinic=clinic,
            body=part.body,
            size=part.size,
            sha256=part.sha256,
            study_instance_uid=study_instance_uid,
            what=(index, sop_class, sop_uid),
            result=result,
        )
    return result


def _register(
    session: Session,
    *,
    store: ObjectStore,
    clinic: Institution,
    body: IO[bytes],
    size: int,
    sha256: str,
    study_instance_uid: str | None,
    what: tuple[int, str, str],
    result: StowResult,
) -> None:
    """Register one instance; its success or Failure Reason goes into *result*."""
    index, sop_class, sop_uid = what
    try:
        stored = register_instance(
            session,
            store=store,
            clinic=clinic,
            body=body,  # type: ignore[arg-type]
            size=size,
            sha256=sha256,
            expected_study_instance_uid=study_instance_uid,
        )
    except StudyMismatch:
        log.info("STOW part %d refused: %s is not in the requested study", index, sop_uid)
        result.failed.append((sop_class, sop_uid, DATASET_DOES_NOT_MATCH))
    except InvalidDicomError as exc:
        log.info("STOW part %d refused: %s", index, exc)
        result.failed.append((sop_class, sop_uid, CANNOT_UNDERSTAND))
    except Conflict as exc:
        log.info("STOW part %d (%s) refused: %s", index, sop_uid, exc)
        result.failed.append((sop_class, sop_uid, PROCESSING_FAILURE))
    except StorageError as exc:
        log.error("STOW part %d (%s) could not be stored: %s", index, sop_uid, exc)
        session.rollback()
        result.failed.append((sop_class, sop_uid, OUT_OF_RESOURCES))
    else:
        result.stored.append(
            (
                sop_class,
                stored.sop_instance_uid,
                stored.study_instance_uid,
                stored.series_instance_uid,
            )
        )


def _metadata(part: ReceivedPart) -> list[Any]:
    """The DICOM JSON array of a metadata part; InvalidRequest if it is not one."""
    if part.too_large:
        raise InvalidRequest("The metadata part is larger than the instance limit.")
    try:
        part.body.seek(0)
        items = json.loads(part.body.read())
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("The metadata part is not valid JSON.") from None
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InvalidRequest("The metadata part must be a DICOM JSON array of datasets.")
    return items


def _bulk(part: ReceivedPart) -> BulkData | None:
    if part.too_large:
        return None
    media_type, params = parse_media_type(part.content_type)
    part.body.seek(0)
    return BulkData(part.body.read(), media_type, params.get("transfer-syntax"))


def store_json_parts(
    session: Session,
    *,
    store: ObjectStore,
    clinic: Institution,
    parts: Sequence[ReceivedPart],
    study_instance_uid: str | None = None,
) -> StowResult:
    """Store instances sent as DICOM JSON metadata plus bulk data parts (PS3.18 10.5.1.2).

    Every ``application/dicom+json`` part holds an array of datasets; every other part is
    bulk data named by its Content-Location. Each dataset becomes a Part-10 file
    (:func:`imaging_hub.dicom.from_json.part10_from_json`) and is then checked and registered
    like an ``application/dicom`` part. Raises InvalidRequest when there is no metadata or it
    is not a JSON array of objects.
    """
    is_metadata = [parse_media_type(p.content_type)[0] == DICOM_JSON for p in parts]
    if not any(is_metadata):
        raise InvalidRequest("A metadata + bulk data body needs an application/dicom+json part.")
    items = [
        item for p, meta in zip(parts, is_metadata, strict=True) if meta for item in _metadata(p)
    ]
    bulk: dict[str, BulkData] = {}
    for part, meta in zip(parts, is_metadata, strict=True):
        if not meta and part.content_location:
            content = _bulk(part)
            if content is not None:
                bulk[part.content_location] = content
    result = StowResult()
    for index, item in enumerate(items):
        sop_class, sop_uid = json_sop_uids(item)
        try:
            data = part10_from_json(item, bulk_data=bulk)
            check_received_instance(data)  # the gateway's checks: complete pixel data, UIDs
        except InvalidDicomError as exc:
            log.info("STOW dataset %d refused: %s", index, exc)
            result.failed.append((sop_class, sop_uid, CANNOT_UNDERSTAND))
            continue
        _register(
            session,
            store=store,
            clinic=clinic,
            body=io.BytesIO(data),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            study_instance_uid=study_instance_uid,
            what=(index, sop_class, sop_uid),
            result=result,
        )
    return result


def stow(
    session: Session,
    caller: Caller,
    *,
    store: ObjectStore,
    parts: Sequence[ReceivedPart],
    metadata_and_bulk_data: bool,
    study_instance_uid: str | None = None,
) -> StowResult:
    """STOW-RS by *caller* (clinic staff), always into the caller's own clinic (like a clinic's
    gateway): every part stored or refused with its reason, one audit record per study stored
    (or one for a request that stored nothing but had refusals); commits."""
    caller.require(Permission.dicomweb_store)
    clinic = caller.user.institution
    result = (store_json_parts if metadata_and_bulk_data else store_parts)(
        session, store=store, clinic=clinic, parts=parts, study_instance_uid=study_instance_uid
    )
    failed = len(result.failed)
    studies = sorted({study for _, _, study, _ in result.stored})
    for study in studies:
        count = sum(1 for s in result.stored if s[2] == study)
        audit.record_for(
            session,
            caller,
            audit.STUDY_STORED,
            object_type="study",
            object_id=study,
            study_uid=study,
            detail={"via": "stow-rs", "instances": count, "failed_parts": failed},
        )
    if failed and not studies:
        audit.record_for(
            session,
            caller,
            audit.STUDY_STORED,
            object_type="stow",
            detail={"via": "stow-rs", "failed_parts": failed},
        )
    session.commit()
    return result
