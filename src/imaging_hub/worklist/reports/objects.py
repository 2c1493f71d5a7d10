"""The signed report's DICOM objects in the study: built, stored, registered.

Each signature adds two new series to the study — an Encapsulated PDF holding the signed PDF
byte for byte, and a TID 2000 Enhanced SR — stored under the study's usual object keys
(``storage.instance_key``) and registered as Series/Instance rows, so QIDO-RS and WADO-RS serve
them with the same scope and audit as the images. They are added in the signing transaction
(not through ``registration.register_instance``, which commits on its own and would log them as
late instances); the objects are written first, the rows commit with the signature.
"""

import hashlib
from dataclasses import dataclass

from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging_hub.dicom.report_objects import dataset_bytes
from imaging_hub.errors import Conflict
from imaging_hub.storage import ObjectStore, instance_key
from imaging_hub.worklist.db.models import Instance, Series, Study

#: Modalities of series that hold no images (the report's own objects among them).
NON_IMAGE = ("SR", "KO", "PR", "DOC", "REG", "SEG")


def source_dataset(session: Session, store: ObjectStore, study: Study) -> Dataset:
    """The header of the study's first image instance: patient and study attributes for the
    report objects, and the SR's evidence."""
    key = session.scalar(
        select(Instance.object_key)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id == study.id, Series.modality.not_in(list(NON_IMAGE)))
        .order_by(Series.id, Instance.instance_number, Instance.id)
        .limit(1)
    )
    if key is None:
        raise Conflict(
            "This study holds no image instance to attach a report to.",
            code="report_study_empty",
        )
    with store.open(key) as stream:
        return dcmread(stream, stop_before_pixels=True)


def read_dataset(store: ObjectStore, key: str) -> Dataset:
    with store.open(key) as stream:
        return dcmread(stream)


@dataclass(frozen=True)
class StoredObject:
    series_instance_uid: str
    sop_instance_uid: str
    object_key: str
    size: int
    sha256: str


def store_objects(
    session: Session, *, store: ObjectStore, study: Study, clinic_code: str, objects: list[Dataset]
) -> list[StoredObject]:
    """Write each dataset to the object store and add its series and instance rows (flushed,
    not committed); the study's counts follow."""
    stored: list[StoredObject] = []
    for ds in objects:
        data = dataset_bytes(ds)
        key = instance_key(
            clinic_code, study.study_instance_uid, ds.SeriesInstanceUID, ds.SOPInstanceUID
        )
        store.put(key, data)
        digest = hashlib.sha256(data).hexdigest()
        series = Series(
            study_id=study.id,
            series_instance_uid=str(ds.SeriesInstanceUID),
            modality=str(ds.Modality),
            body_part_examined="",
            series_number=int(ds.SeriesNumber) if "SeriesNumber" in ds else None,
            series_description=str(ds.get("SeriesDescription", ""))[:64],
            num_instances=1,
        )
        session.add(series)
        session.flush()
        session.add(
            Instance(
                series_id=series.id,
                sop_instance_uid=str(ds.SOPInstanceUID),
                sop_class_uid=str(ds.SOPClassUID),
                transfer_syntax_uid=str(
                    ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)
                ),
                instance_number=int(ds.InstanceNumber) if "InstanceNumber" in ds else None,
                object_key=key,
                size=len(data),
                sha256=digest,
            )
        )
        study.num_series = (study.num_series or 0) + 1
        study.num_instances = (study.num_instances or 0) + 1
        study.total_bytes = (study.total_bytes or 0) + len(data)
        stored.append(
            StoredObject(str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), key, len(data), digest)
        )
    session.flush()
    return stored


def object_key_of(session: Session, sop_instance_uid: str) -> str | None:
    return session.scalar(
        select(Instance.object_key).where(Instance.sop_instance_uid == sop_instance_uid)
    )
