"""The hub knows the PS3.5 2024 transfer syntaxes without importing pynetdicom.

pydicom 3.0 predates JPEG XL and deflated image frames; pynetdicom registers them on import.
The hub does not import pynetdicom (only the gateway does), so ``imaging_hub.dicom`` registers
them itself. Checked in a fresh interpreter, where nothing else has imported pynetdicom.
"""

import subprocess
import sys

PROBE = """
import sys
import imaging_hub.worklist.app
from pydicom.uid import UID
assert "pynetdicom" not in sys.modules, "the hub imported pynetdicom"
for uid in ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112",
            "1.2.840.10008.1.2.8.1"):
    assert UID(uid).is_transfer_syntax, uid
assert UID("1.2.840.10008.1.2.4.112").is_compressed
print("ok")
"""


def test_new_transfer_syntaxes_are_known_to_the_hub_alone() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
