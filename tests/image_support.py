"""Synthetic images for tests: made here, so no patient data is needed."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DIGITAL_X_RAY = "1.2.840.10008.5.1.4.1.1.1.1"


def radiograph(
    rows: int,
    columns: int,
    *,
    bits_stored: int = 12,
    signed: bool = False,
    seed: int = 0,
    frames: int = 1,
    samples: int = 1,
) -> bytes:
    """A native Part-10 image with radiograph-like content."""
    rng = np.random.default_rng(seed)
    bits_allocated = 8 if bits_stored <= 8 else 16
    low, high = (
        (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1)
        if signed
        else (0, (1 << bits_stored) - 1)
    )
    y, x = np.mgrid[0:rows, 0:columns]
    body = np.sin(x / max(columns, 1) * 3.1) * np.cos(y / max(rows, 1) * 2.3)
    image = low + (high - low) * (0.5 + 0.4 * body)
    image = image + rng.normal(0, (high - low) / 200, size=image.shape)
    image[:, : columns // 10] = low  # collimator: a flat border (run mode)
    image[rows // 3 : rows // 3 + rows // 10, columns // 2 :] = high  # burnt-out area
    pixels = np.clip(np.rint(image), low, high)
    dtype = {
        (8, False): np.uint8,
        (8, True): np.int8,
        (16, False): np.uint16,
        (16, True): np.int16,
    }[(bits_allocated, signed)]
    array = pixels.astype(dtype)
    if samples == 3:
        array = np.stack([array, array[::-1], array[:, ::-1]], axis=-1)
    if frames > 1:
        array = np.stack([array] * frames)
    ds = Dataset()
    ds.SOPClassUID = DIGITAL_X_RAY
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Zhao^Jianguo=赵^建国"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.Modality = "DX"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = array.astype(array.dtype.newbyteorder("<")).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
