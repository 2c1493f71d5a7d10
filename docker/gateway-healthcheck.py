"""The gateway container's HEALTHCHECK: a DICOM C-ECHO to its own SCP.

Healthy when the SCP answers: the echo succeeds, or the association is rejected (a gateway that
accepts only listed calling AE titles still answered). Unhealthy when nothing answers in time.
Settings come from the same environment variables as ``imaging-hub gateway serve``.
"""

import os
import sys

from pynetdicom import AE

VERIFICATION = "1.2.840.10008.1.1"


def main() -> int:
    port = int(os.environ.get("IMAGING_HUB_GATEWAY_DICOM_PORT", "11112"))
    called = os.environ.get("IMAGING_HUB_GATEWAY_AE_TITLE", "CLINIC_A")
    ae = AE(ae_title="HEALTHCHECK")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if assoc.is_rejected:
        return 0
    if not assoc.is_established:
        print(f"no DICOM answer on 127.0.0.1:{port}", file=sys.stderr)
        return 1
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    ok = bool(status) and status.Status == 0
    if not ok:
        print("C-ECHO did not succeed", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
