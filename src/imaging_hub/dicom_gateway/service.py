"""One running gateway: SCP + spool + forwarder, wired from :class:`GatewaySettings`."""

import logging
import threading

from imaging_hub.config import GatewaySettings
from imaging_hub.dicom_gateway.forwarder import Forwarder
from imaging_hub.dicom_gateway.hub_client import HubClient
from imaging_hub.dicom_gateway.scp import StoreHandler, make_ae, start_scp
from imaging_hub.dicom_gateway.spool import Spool

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
        )
        self.handler = StoreHandler(
            self.spool,
            max_instance_bytes=settings.max_instance_bytes,
            on_stored=self.forwarder.wake,
        )
        self.ae = make_ae(settings.ae_title, allowed_calling_aes=settings.allowed_calling_aes)
        self._server: object | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        self.forwarder.start()
        self._server = start_scp(
            self.ae, self.handler, self.settings.host, self.settings.dicom_port
        )
        log.info(
            "gateway %s (%s) listening on %s:%d, forwarding to %s",
            self.settings.clinic,
            self.settings.ae_title,
            self.settings.host,
            self.settings.dicom_port,
            self.settings.hub_url,
        )

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()  # type: ignore[attr-defined]
        self.forwarder.stop()
        self.client.close()
        self.spool.close()
