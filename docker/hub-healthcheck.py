"""The hub container's HEALTHCHECK: ``GET /healthz`` on the hub's own port answers 200.

HTTPS when the hub serves TLS itself (``IMAGING_HUB_TLS_CERT_FILE``); the certificate is not
checked, since this is loopback and the question is only whether the hub answers. Settings come
from the same environment variables as ``imaging-hub hub serve``.
"""

import os
import ssl
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = int(os.environ.get("IMAGING_HUB_PORT", "8000"))
    scheme = "https" if os.environ.get("IMAGING_HUB_TLS_CERT_FILE") else "http"
    context = ssl._create_unverified_context() if scheme == "https" else None
    url = f"{scheme}://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as response:
            ok = response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    if not ok:
        print(f"{url}: HTTP {response.status}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
