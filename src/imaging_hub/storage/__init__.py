"""The only place that talks to the object store. Keys are built in :func:`object_key`."""

from imaging_hub.storage.base import ObjectStore, instance_key, report_key, study_prefix

__all__ = ["ObjectStore", "instance_key", "report_key", "study_prefix"]
