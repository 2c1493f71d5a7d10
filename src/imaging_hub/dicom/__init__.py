"""Shared DICOM knowledge: attribute extraction, UID rules, transcoding, rendering.

This package is the only place that knows DICOM attribute tags and UID rules.
"""

from pydicom._uid_dict import UID_dictionary

# Transfer syntaxes of PS3.5 2024 that pydicom 3.0 predates (JPEG XL, deflated image frames).
# pynetdicom adds them to pydicom's dictionary when it is imported; the hub does not import
# pynetdicom, so they are added here, for the hub and the gateway alike: without them pydicom
# refuses to write, and misjudges, an instance stored in one of these syntaxes.
for _uid, _entry in {
    "1.2.840.10008.1.2.4.110": ("JPEG XL Lossless", "Transfer Syntax", "", "", "JPEGXLLossless"),
    "1.2.840.10008.1.2.4.111": (
        "JPEG XL JPEG Recompression",
        "Transfer Syntax",
        "",
        "",
        "JPEGXLJPEGRecompression",
    ),
    "1.2.840.10008.1.2.4.112": ("JPEG XL", "Transfer Syntax", "", "", "JPEGXL"),
    "1.2.840.10008.1.2.8.1": (
        "Deflated Image Frame Compression",
        "Transfer Syntax",
        "",
        "",
        "DeflatedImageFrameCompression",
    ),
}.items():
    UID_dictionary.setdefault(_uid, _entry)
