"""pydicom UIDs shared, not rebuilt, by ``copy.deepcopy`` (pynetdicom copies contexts a lot)."""

import copy
from typing import Any

from pydicom.uid import UID


def _same(value: UID, memo: Any) -> UID:
    return value


def copy_uids_by_reference() -> None:
    """Make ``copy.deepcopy`` return a pydicom UID itself instead of rebuilding it.

    pynetdicom deep-copies the AE's presentation contexts for every association (180 SOP classes
    times ~45 transfer syntaxes here). deepcopy rebuilds each UID, a str subclass, through
    ``__reduce_ex__``: about 60 ms per association, a third of the time a two-image DX study
    takes. A UID is immutable, so sharing it is what deepcopy does for str already.
    Process-wide: called by :func:`imaging_hub.dicom_gateway.lean.install` only.
    """
    dispatch = getattr(copy, "_deepcopy_dispatch", None)
    if isinstance(dispatch, dict):
        dispatch[UID] = _same


def uids_copied_by_reference() -> bool:
    dispatch = getattr(copy, "_deepcopy_dispatch", None)
    return isinstance(dispatch, dict) and dispatch.get(UID) is _same
