"""Shared DICOM knowledge: attribute extraction, UID rules, transcoding, rendering.

This package is the only place that knows DICOM attribute tags and UID rules.
"""
