"""Prometheus metrics of a gateway, and the status it reports to the hub in its heartbeat.

Both are read from the spool at the moment they are asked for (the spool's index is shared by
every process on it), plus the forwarder's in-process figures (uplink throughput, upload
failures, last error). The status lists the parked studies with their reason (the hub's code
and detail), so ``gateway status``, the heartbeat and the hub's gateways page show them. Counters
are monotonic (the spool's totals survive the retention purge). Metrics are served by
``prometheus_client``'s small HTTP server on ``metrics_port`` of the gateway host, from a
registry of their own (no global state).
"""

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from imaging_hub import __version__
from imaging_hub.dicom_gateway.forwarder import Forwarder
from imaging_hub.dicom_gateway.mpps import MppsSteps
from imaging_hub.dicom_gateway.mwl import cache_status
from imaging_hub.dicom_gateway.spool import Spool
from imaging_hub.dicom_gateway.spool.space import REFUSED_COUNTER

#: Parked studies listed in the status and the heartbeat at most (the count is complete).
PARKED_LISTED = 50
#: MPPS steps in progress listed at most.
MPPS_LISTED = 50


def gateway_status(spool: Spool, forwarder: Forwarder | None) -> dict[str, Any]:
    """What the gateway tells the hub in its heartbeat (POST /api/v1/gateways/heartbeat)."""
    stats = spool.stats()
    totals = spool.totals()
    last_error = stats.last_error
    if forwarder is not None and forwarder.last_error:
        last_error = forwarder.last_error
    return {
        "version": __version__,
        "queue_depth": stats.pending,
        "bytes_pending": stats.pending_bytes,
        "failed": stats.failed,
        "open_studies": stats.open_studies,
        "parked_studies": stats.parked_studies,
        "parked": [study.as_dict() for study in spool.parked(limit=PARKED_LISTED)],
        "sent": totals["forwarded"],
        "received": totals["received"],
        "refused": totals["refused"],
        # The full-disk alarm: spool_full, spool_free_bytes, spool_min_free_bytes (read now).
        **spool.space.status(),
        "refused_no_space": spool.counter(REFUSED_COUNTER),
        "last_success_at": stats.last_sent_at,
        "last_error": last_error[:500],
        "last_error_at": forwarder.last_error_at if forwarder is not None else None,
        "uplink_bytes_per_second": (
            round(forwarder.throughput.bytes_per_second(), 1) if forwarder is not None else 0.0
        ),
        "reported_at": time.time(),
        # The Modality Worklist's order cache: orders_cached, orders_synced_at, orders_sync_error.
        **cache_status(spool.root),
        # MPPS steps still IN PROGRESS, states not yet at the hub, studies held by associations.
        "mpps_in_progress": MppsSteps(spool.index).in_progress(limit=MPPS_LISTED),
        "mpps_outbox": MppsSteps(spool.index).counts()["outbox"],
        "open_associations": spool.open_association_studies(),
    }


class GatewayCollector(Collector):
    """Reads the spool and the forwarder on every scrape."""

    def __init__(self, spool: Spool, forwarder: Forwarder | None) -> None:
        self.spool = spool
        self.forwarder = forwarder

    def collect(self) -> Iterable[Metric]:
        stats = self.spool.stats()
        totals = self.spool.totals()
        prefix = "imaging_hub_gateway"
        counters = [
            ("received_instances", "Instances acknowledged to modalities.", totals["received"]),
            ("received_bytes", "Bytes of acknowledged instances.", totals["received_bytes"]),
            ("refused_instances", "C-STOREs answered with a failure status.", totals["refused"]),
            (
                "refused_no_space_instances",
                "C-STOREs refused (0xA700) for want of space on the spool's file system.",
                self.spool.counter(REFUSED_COUNTER),
            ),
            ("forwarded_instances", "Instances the hub confirmed.", totals["forwarded"]),
            ("forwarded_bytes", "Bytes sent (after transcoding).", totals["forwarded_bytes"]),
            (
                "upload_failures",
                "Failed upload attempts since start (retried or parked).",
                self.forwarder.upload_failures if self.forwarder else 0,
            ),
        ]
        for name, doc, value in counters:
            family = CounterMetricFamily(f"{prefix}_{name}", doc)
            family.add_metric([], float(value))
            yield family
        gauges: list[tuple[str, str, float]] = [
            ("queue_depth", "Instances waiting to be forwarded.", stats.pending),
            ("queue_bytes", "Bytes waiting to be forwarded.", stats.pending_bytes),
            ("failed_instances", "Instances parked after a permanent refusal.", stats.failed),
            ("parked_studies", "Studies parked after a permanent refusal.", stats.parked_studies),
            ("open_studies", "Studies not yet complete at the hub.", stats.open_studies),
            (
                "uplink_bytes_per_second",
                "Measured upload throughput over the last minute.",
                self.forwarder.throughput.bytes_per_second() if self.forwarder else 0.0,
            ),
        ]
        space = self.spool.space.status()
        gauges += [
            (
                "spool_full",
                "1 while free space on the spool's file system is below its floor: new "
                "instances are refused (0xA700).",
                float(space["spool_full"]),
            ),
            (
                "spool_free_bytes",
                "Free bytes on the spool's file system (for the gateway's user).",
                space["spool_free_bytes"],
            ),
            (
                "spool_min_free_bytes",
                "The free-space floor (spool_min_free_bytes / spool_min_free_percent).",
                space["spool_min_free_bytes"],
            ),
        ]
        orders = cache_status(self.spool.root)
        gauges += [
            ("orders_cached", "Orders in the Modality Worklist cache.", orders["orders_cached"]),
            (
                "orders_synced_timestamp_seconds",
                "When the order cache was last confirmed by the hub (0: never).",
                orders["orders_synced_at"] or 0.0,
            ),
        ]
        mpps = MppsSteps(self.spool.index).counts()
        gauges += [
            ("mpps_in_progress", "MPPS steps IN PROGRESS.", mpps.get("IN PROGRESS", 0)),
            ("mpps_outbox", "MPPS states not yet confirmed by the hub.", mpps["outbox"]),
            (
                "open_association_studies",
                "Studies an open association carries (not complete until it ends).",
                len(self.spool.open_association_studies()),
            ),
        ]
        for name, doc, level in gauges:
            gauge = GaugeMetricFamily(f"{prefix}_{name}", doc)
            gauge.add_metric([], level)
            yield gauge
        info = GaugeMetricFamily(f"{prefix}_info", "Version of the gateway.", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info


def gateway_registry(spool: Spool, forwarder: Forwarder | None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(spool, forwarder))
    return registry
