"""One running gateway: SCP + spool + forwarder, wired from :class:`GatewaySettings`.

Besides the DICOM side it runs a heartbeat to the hub (every ``heartbeat_seconds``) and, when
``metrics_port`` is set, a Prometheus endpoint on the gateway host.
"""

import logging
import threading
from typing import Any

from prometheus_client import start_http_server

from imaging_hub.config import GatewaySettings
from imaging_hub.dicom_gateway.forwarder import Forwarder, wan_preparer
from imaging_hub.dicom_gateway.hub_client import HubClient
from imaging_hub.dicom_gateway.metrics import gateway_registry, gateway_status
from imaging_hub.dicom_gateway.scp import StoreHandler, make_ae, start_scp
from imaging_hub.dicom_gateway.spool import Spool
from imaging_hub.errors import ForwardError

log = logging.getLogger(__name__)


class GatewayService:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool_dir)
        self.client = HubClient(
            settings.hub_url,
            settings.hub_token.get_secret_value(),
            ca_file=settings.hub_ca_file,
        )
        self.forwarder = Forwarder(
            spool=self.spool,
            client=self.client,
            concurrency=settings.upload_concurrency,
            stability_seconds=settings.stability_seconds,
            retry_initial_seconds=settings.retry_initial_seconds,
            retry_max_seconds=settings.retry_max_seconds,
            prepare=wan_preparer(settings.transcode),
            bandwidth_limit_bytes_per_second=settings.bandwidth_limit_bytes_per_second,
        )
        self.handler = StoreHandler(
            self.spool,
            max_instance_bytes=settings.max_instance_bytes,
            on_stored=self.forwarder.wake,
            on_refused=lambda: self.spool.count("refused"),
        )
        self.ae = make_ae(
            settings.ae_title,
            allowed_calling_aes=settings.allowed_calling_aes,
            extra_storage_sop_classes=settings.extra_storage_sop_classes,
        )
        self._server: object | None = None
        self._metrics_server: Any = None
        self._stopped = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def start(self) -> None:
        self.forwarder.start()
        self._server = start_scp(
            self.ae, self.handler, self.settings.host, self.settings.dicom_port
        )
        if self.settings.metrics_port:
            self._metrics_server, _ = start_http_server(
                self.settings.metrics_port,
                addr=self.settings.host,
                registry=gateway_registry(self.spool, self.forwarder),
            )
            log.info(
                "metrics on http://%s:%d/metrics", self.settings.host, self.settings.metrics_port
            )
        self._heartbeat.start()
        log.info(
            "gateway %s (%s) listening on %s:%d, forwarding to %s",
            self.settings.clinic,
            self.settings.ae_title,
            self.settings.host,
            self.settings.dicom_port,
            self.settings.hub_url,
        )

    def status(self) -> dict[str, Any]:
        return gateway_status(self.spool, self.forwarder)

    def _beat(self) -> None:
        """Report to the hub until stopped; a hub that does not answer is tried next time."""
        while not self._stopped.is_set():
            try:
                self.client.heartbeat({**self.status(), "ae_title": self.settings.ae_title})
            except ForwardError as exc:
                log.debug("heartbeat not delivered: %s", exc)
            except Exception:  # the heartbeat must never stop the gateway
                log.exception("heartbeat failed")
            self._stopped.wait(self.settings.heartbeat_seconds)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()  # type: ignore[attr-defined]
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self.forwarder.stop()
        self._heartbeat.join(10)
        self.client.close()
        self.spool.close()
