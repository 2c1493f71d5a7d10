"""One running gateway: SCP + spool + forwarder, wired from :class:`GatewaySettings`.

Besides the DICOM side it runs a heartbeat to the hub (every ``heartbeat_seconds``) and, when
``metrics_port`` is set, a Prometheus endpoint on the gateway host.

With ``scp_workers`` > 1 the DICOM SCP runs in that many worker processes (spawned, not
forked) that share one listening socket and the one spool (SQLite WAL is multi-process safe);
one Python process alone cannot receive four associations as fast as a C server because of the
GIL. The forwarder, heartbeat and metrics run only in the main process; a worker wakes the
forwarder after each instance and MPPS change through a datagram socket in the spool directory
(:mod:`~imaging_hub.dicom_gateway.wakeup`). A worker that dies is
replaced; workers die with the main process (``PR_SET_PDEATHSIG``), so a killed gateway frees
its port.
"""

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import ssl
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import start_http_server

from imaging_hub.config import GatewaySettings
from imaging_hub.dicom_gateway.forwarder import Forwarder, wan_preparer
from imaging_hub.dicom_gateway.hub_client import HubClient
from imaging_hub.dicom_gateway.metrics import gateway_registry, gateway_status
from imaging_hub.dicom_gateway.mpps import MppsOutcome, MppsPusher, MppsSteps, is_completed
from imaging_hub.dicom_gateway.mwl import OrderCache, OrderSync
from imaging_hub.dicom_gateway.reports import ReportPuller, ReportStore
from imaging_hub.dicom_gateway.scp import (
    StoreHandler,
    WorklistHandler,
    listen_socket,
    make_ae,
    start_scp,
    start_shared_scp,
)
from imaging_hub.dicom_gateway.spool import Spool
from imaging_hub.dicom_gateway.wakeup import Waker
from imaging_hub.errors import ForwardError
from imaging_hub.tls import server_context

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
RESPAWN_MIN_SECONDS = 1.0


def build_scp(
    settings: GatewaySettings, spool: Spool, *, on_stored: Any = None, on_mpps: Any = None
) -> tuple[Any, StoreHandler]:
    """The AE and the C-STORE handler of one SCP process (main process or worker)."""
    handler = StoreHandler(
        spool,
        max_instance_bytes=settings.max_instance_bytes,
        on_stored=on_stored,
        on_refused=lambda: spool.count("refused"),
        on_mpps=on_mpps,
    )
    ae = make_ae(
        settings.ae_title,
        allowed_calling_aes=settings.allowed_calling_aes,
        extra_storage_sop_classes=settings.extra_storage_sop_classes,
    )
    # Modality Worklist C-FIND from the order cache every process opens (mwl.py).
    handler.worklist = WorklistHandler(
        OrderCache(settings.spool_dir),
        character_sets=dict(settings.mwl_character_sets),
        default_character_set=settings.mwl_default_character_set,
    )
    return ae, handler


def open_spool(settings: GatewaySettings, *, clean_tmp: bool = True) -> Spool:
    """The gateway's spool with its free-space floor (main process, worker, ``gateway status``)."""
    return Spool(
        settings.spool_dir,
        clean_tmp=clean_tmp,
        min_free_bytes=settings.spool_min_free_bytes,
        min_free_percent=settings.spool_min_free_percent,
    )


def _die_with_parent(parent_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def scp_worker_main(
    index: int,
    settings: GatewaySettings,
    sock: socket.socket,
    loads: Any,
    parent_pid: int,
    log_level: int,
) -> None:
    """Entry point of one SCP worker process (spawned by :class:`GatewayService`)."""
    _die_with_parent(parent_pid)
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s %(name)s[scp-{index}]: %(message)s",
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    spool = open_spool(settings, clean_tmp=False)
    waker = Waker(settings.spool_dir)  # the main process's forwarder (and MPPS outbox)
    ae, handler = build_scp(
        settings, spool, on_stored=waker.stored, on_mpps=lambda _outcome: waker.mpps()
    )
    server = start_shared_scp(
        ae, handler, sock, loads=loads, index=index, ssl_context=scp_tls_context(settings)
    )
    log.info("SCP worker %d (pid %d) serving", index, os.getpid())
    while not stop.wait(1.0):
        if os.getppid() != parent_pid:
            break
    server.shutdown()
    spool.close()
    waker.close()


def scp_tls_context(settings: GatewaySettings) -> ssl.SSLContext | None:
    """The DICOM SCP's TLS context, or None for plain TCP (no certificate configured)."""
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise ValueError("DICOM TLS needs both tls_cert_file and tls_key_file.")
    return server_context(
        settings.tls_cert_file, settings.tls_key_file, client_ca_file=settings.tls_ca_file
    )


class GatewayService:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.spool = open_spool(settings)
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
            retention_seconds=settings.retention_hours * 3600,
            retry_initial_seconds=settings.retry_initial_seconds,
            retry_max_seconds=settings.retry_max_seconds,
            prepare=wan_preparer(settings.transcode),
            bandwidth_limit_bytes_per_second=settings.bandwidth_limit_bytes_per_second,
            prepare_processes=settings.transcode_processes if settings.forward else 0,
            max_association_seconds=settings.max_association_seconds,
            wakeup_dir=settings.spool_dir,
        )
        # MPPS steps (spool index) and their outbox, pushed to the hub by a thread of its own.
        self.mpps = MppsSteps(self.spool.index)
        self.mpps_pusher = MppsPusher(
            self.mpps,
            self.client,
            retry_initial_seconds=settings.retry_initial_seconds,
            retry_max_seconds=settings.retry_max_seconds,
        )
        self.forwarder.on_mpps_wakeup = self.mpps_pusher.wake  # a worker's MPPS change
        self.ae, self.handler = build_scp(
            settings, self.spool, on_stored=self.forwarder.wake, on_mpps=self._mpps_changed
        )
        assert self.handler.worklist is not None
        self.orders = self.handler.worklist.cache
        # The order cache also tells the completion step "exam done" / expected images reached.
        self.forwarder.order_hints = self.orders
        self.order_sync = (
            OrderSync(self.orders, self.client.orders, interval=settings.order_sync_seconds)
            if settings.order_sync_seconds > 0
            else None
        )
        self._server: object | None = None
        self._metrics_server: Any = None
        self._stopped = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._ctx = multiprocessing.get_context("spawn")
        self._loads: Any = None
        self._socket: socket.socket | None = None
        self._supervisor: threading.Thread | None = None
        self.workers: list[BaseProcess] = []
        self.reports: ReportStore | None = None
        self.report_puller: ReportPuller | None = None
        self.lan_page: Any = None
        self._report_client: HubClient | None = None
        if settings.pull_reports or settings.lan_page_port:
            self._init_reports()

    def _init_reports(self) -> None:
        """Reports back at the clinic (``reports.py``) and the LAN page (``lan_page.py``)."""
        settings = self.settings
        self.reports = ReportStore(settings.spool_dir)
        if settings.pull_reports:
            from imaging_hub.dicom_gateway.report_sender import DicomNode

            self._report_client = HubClient(  # its own: the long-poll holds a connection
                settings.hub_url,
                settings.hub_token.get_secret_value(),
                ca_file=settings.hub_ca_file,
            )
            self.report_puller = ReportPuller(
                self.reports,
                self._report_client,
                wait_seconds=settings.report_poll_wait_seconds,
                staff_sync_seconds=settings.staff_sync_seconds,
                retry_initial_seconds=settings.retry_initial_seconds,
                retry_max_seconds=settings.retry_max_seconds,
                keep_days=settings.reports_keep_days,
                node=DicomNode.parse(settings.report_node) if settings.report_node else None,
                calling_ae=settings.ae_title,
            )
        if settings.lan_page_port:
            from imaging_hub.dicom_gateway.lan_page import LanPage, LanPageServer

            page = LanPage(
                self.reports,
                clinic=settings.clinic,
                secure_cookie=settings.lan_page_tls_cert_file is not None,
                zone=ZoneInfo(settings.timezone),
            )
            self.lan_page = LanPageServer(
                page,
                host=settings.lan_page_host or settings.host,
                port=settings.lan_page_port,
                tls_cert_file=settings.lan_page_tls_cert_file,
                tls_key_file=settings.lan_page_tls_key_file,
            )

    def start(self) -> None:
        if self.report_puller is not None:
            self.report_puller.start()
        if self.lan_page is not None:
            self.lan_page.start()
        if self.settings.forward:
            self.forwarder.start()
            self.mpps_pusher.start()
        if self.order_sync is not None:
            self.order_sync.start()
        if self.settings.scp_workers == 1:
            self._server = start_scp(
                self.ae,
                self.handler,
                self.settings.host,
                self.settings.dicom_port,
                ssl_context=scp_tls_context(self.settings),
            )
        else:
            self._socket = listen_socket(self.settings.host, self.settings.dicom_port)
            self._loads = self._ctx.Array("i", self.settings.scp_workers)
            started = threading.Event()
            self._supervisor = threading.Thread(
                target=self._supervise, args=(started,), name="scp-supervisor", daemon=True
            )
            self._supervisor.start()
            started.wait(60)
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
            "gateway %s (%s) listening on %s:%d with %d SCP process(es), %s %s",
            self.settings.clinic,
            self.settings.ae_title,
            self.settings.host,
            self.settings.dicom_port,
            self.settings.scp_workers,
            "forwarding to" if self.settings.forward else "NOT forwarding to",
            self.settings.hub_url,
        )

    def status(self) -> dict[str, Any]:
        status = gateway_status(self.spool, self.forwarder)
        if self.reports is not None:
            status.update(self.reports.counts())
        return status

    def _mpps_changed(self, outcome: MppsOutcome) -> None:
        """An MPPS change in this process: push it now; a COMPLETED step may complete its
        study at once (an SCP worker process's change comes through the wake-up socket)."""
        self.mpps_pusher.wake()
        if is_completed(outcome):
            self.forwarder.wake(mpps=True)

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

    def _spawn(self, index: int) -> BaseProcess:
        process = self._ctx.Process(
            target=scp_worker_main,
            args=(
                index,
                self.settings,
                self._socket,
                self._loads,
                os.getpid(),
                logging.getLogger().getEffectiveLevel(),
            ),
            name=f"scp-worker-{index}",
            daemon=True,
        )
        process.start()
        return process

    def _supervise(self, started: threading.Event) -> None:
        """Spawn the workers and replace any that dies (this thread is their parent thread:
        ``PR_SET_PDEATHSIG`` fires when the spawning thread ends, so it lives until stop)."""
        self.workers = [self._spawn(i) for i in range(self.settings.scp_workers)]
        started.set()
        spawned_at = [time.monotonic()] * len(self.workers)
        while not self._stopped.wait(0.2):
            for i, process in enumerate(self.workers):
                if process.is_alive() or time.monotonic() - spawned_at[i] < RESPAWN_MIN_SECONDS:
                    continue
                log.warning(
                    "SCP worker %d (pid %s) exited with code %s; starting a new one",
                    i,
                    process.pid,
                    process.exitcode,
                )
                with self._loads.get_lock():
                    self._loads[i] = 0
                self.workers[i] = self._spawn(i)
                spawned_at[i] = time.monotonic()
        for process in self.workers:
            process.terminate()
        for process in self.workers:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()  # type: ignore[attr-defined]
        if self._supervisor is not None:
            self._supervisor.join(30)
        if self._socket is not None:
            self._socket.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if self.lan_page is not None:
            self.lan_page.stop()
        reports_stopped = True
        if self.report_puller is not None:  # a long-poll in flight is left to end (daemon)
            reports_stopped = self.report_puller.stop(timeout=0.5)
        if self.settings.forward:
            self.forwarder.stop()
            self.mpps_pusher.stop()
        self._heartbeat.join(10)
        if self.order_sync is not None:
            self.order_sync.stop()
        self.client.close()
        self.orders.close()
        self.spool.close()
        if reports_stopped:
            if self._report_client is not None:
                self._report_client.close()
            if self.reports is not None:
                self.reports.close()
