"""STOW-RS domain (PS3.18 10.5): store received parts through the gateway's registration path.

Each part is validated and registered alone by :func:`register_instance` (same checks, same
object keys, same idempotency as instances from a clinic gateway); a refused part stores
nothing and is reported with a Failure Reason (PS3.4 Annex B.2.3, PS3.18 Table 10.5.3-1).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from sqlalchemy.orm import Session

from imaging_hub.dicom.attributes import read_dataset
from imaging_hub.errors import Conflict, InvalidDicomError, StorageError
from imaging_hub.storage import ObjectStore
from imaging_hub.worklist.dicomweb.multipart import ReceivedPart, parse_media_type
from imaging_hub.worklist.ingest import StudyMismatch, register_instance
from imaging_hub.worklist.models import Institution

log = logging.getLogger(__name__)

#: Failure Reasons (PS3.4 B.2.3 / PS3.18 Table 10.5.3-1).
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000


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
        sop_class = str(ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
        return sop_class[:64], str(ds.get("SOPInstanceUID") or "")[:64]
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
        try:
            stored = register_instance(
                session,
                store=store,
                clinic=clinic,
                body=part.body,  # type: ignore[arg-type]
                size=part.size,
                sha256=part.sha256,
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
    return result
