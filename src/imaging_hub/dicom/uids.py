"""The one UID rule of imaging-hub, used by every part (gateway, DIMSE codec, hub, keys).

Digits and dots, at most 64 characters: ``^[0-9]+(\\.[0-9]+)*$`` (the contract in
ARCHITECTURE.md). PS3.5 9.1 also forbids leading zeros in a component (``1.2.03``); devices in
the field do send such UIDs, and refusing a patient's images for it helps nobody, so they are
accepted (and stored under their own key) everywhere alike. What matters for safety is that a
UID cannot name a path outside its prefix, which digits and single dots guarantee.
"""

import re
import uuid

from imaging_hub.errors import InvalidUidError

# The contract in ARCHITECTURE.md: ``^[0-9]+(\.[0-9]+)*$``, at most 64 characters.
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
UID_MAX_LENGTH = 64


def is_valid_uid(value: object) -> bool:
    """Whether *value* is a string usable as a UID in object keys and paths."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= UID_MAX_LENGTH
        and UID_PATTERN.fullmatch(value) is not None
    )


def validate_uid(value: object, *, name: str = "UID") -> str:
    """Return *value* if it is a valid UID, else raise :class:`InvalidUidError`.

    *name* is the attribute keyword used in the error message (e.g. ``"StudyInstanceUID"``).
    """
    if not isinstance(value, str) or not value:
        raise InvalidUidError(f"{name} is missing.")
    if len(value) > UID_MAX_LENGTH:
        raise InvalidUidError(f"{name} is longer than {UID_MAX_LENGTH} characters.")
    if UID_PATTERN.fullmatch(value) is None:
        raise InvalidUidError(f"{name} must contain only digits separated by single dots.")
    return value


def new_uid() -> str:
    """A fresh UID derived from a random UUID (``2.25.<uuid as integer>``, PS3.5 B.2)."""
    return f"2.25.{uuid.uuid4().int}"
