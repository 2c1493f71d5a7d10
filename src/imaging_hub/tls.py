"""TLS contexts for the hub's HTTPS, the gateway's calls to the hub and the gateway's DICOM SCP.

Modern defaults only (TLS 1.2 or newer, the standard library's secure cipher list). DICOM TLS
follows PS3.15 B.9 / BCP 195: TLS 1.2+, with the peer's certificate verified against a CA file.
"""

import ssl
from pathlib import Path


def server_context(
    cert_file: Path, key_file: Path, *, client_ca_file: Path | None = None
) -> ssl.SSLContext:
    """A server context; with *client_ca_file*, clients must present a certificate it signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    if client_ca_file is not None:
        ctx.load_verify_locations(cafile=str(client_ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """A client context verifying the server against *ca_file* (default: the system's CAs)."""
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file is not None else None
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
