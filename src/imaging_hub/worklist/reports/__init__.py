"""Reports: the PDF, its PAdES signature (the hub's PKI and timestamping), verification.

Library core (no database, no HTTP): :mod:`.pki` (the hub CA, radiologists' certificates and keys,
the CRL, pluggable signers), :mod:`.timestamps` (RFC 3161), :mod:`.pdf` (the report PDF),
:mod:`.signing` (PAdES B-LT) and :mod:`.verify`. The DICOM objects are built in
:mod:`imaging_hub.dicom.report_objects`. Design: docs/reports.md.
"""
