"""Viewer benchmark (issue 16): our Cornerstone3D viewer against the released OHIF viewer.

    .venv/bin/python -m bench.viewer [--runs 5] [--corpus DIR] [--ohif DIR] [--no-write]

Same hub process, same studies (../shared/bench/gen_corpus.py: the 3000x2500 12-bit DX and the
300-slice 512x512 CT), Debian chromium through Playwright on loopback:

- ours: logged in as rad1 on the worklist; click on the study's worklist row -> the first image
  drawn in the viewport (the viewport's canvas shown for an image of its own series), timed in the
  page (performance.now() before the click, requestAnimationFrame polling after);
- OHIF (``--ohif``: the ``dist/`` of ``@ohif/app`` from the npm registry, e.g. ``npm pack
  @ohif/app`` unpacked outside the repository): its files served as they are by a tiny static
  server in this script, only ``app-config.js`` changed (the data source's three roots point at
  the hub's /dicomweb; ``staticWado`` off, since the hub is a regular DICOMweb server). The hub
  allows OHIF's origin (CORS) and the browser context sends the bearer token of rad1 on every
  request (``Authorization``; what an OHIF deployment with OIDC does). OHIF's study list is not
  part of the timing: the viewer URL (``/viewer?StudyInstanceUIDs=…``) is opened with its files
  in the browser's cache, until the first non-black pixel of its canvas;
- CT: scrolling the loaded series (one keydown per animation frame, slices shown per second),
  the whole series loaded (the progress bar full; OHIF: every slice's frame answered), and the
  tab's memory: the renderer process's RSS growth while the CT is open.

Medians, ratios OHIF / ours (>= 1.00: ours at least as fast) go to stdout and to the viewer
section of docs/benchmarks.md (unless --no-write).
"""

import argparse
import http.server
import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pydicom
from playwright.sync_api import Browser, Page, sync_playwright
from tests.peers.browser import CHROMIUM, CHROMIUM_ARGS, VIEWPORT
from tests.peers.hub import HubProcess, start_hub_process

from bench.common import ROOT, free_port, machine, machine_lines, median, write_section
from bench.dicomweb import corpus_files, load_hub

# In the page: click the row, then wait until the viewport shows an image of its own series.
OURS_FIRST_IMAGE = """
async (uid) => {
  const sel = `tr[data-uid="${uid}"]`;
  const row = document.querySelector(sel + " a") || document.querySelector(sel);
  const t0 = performance.now();
  row.click();
  for (;;) {
    await new Promise((r) => requestAnimationFrame(r));
    const el = document.querySelector('[data-testid=viewport]');
    const c = el && el.querySelector('canvas');
    if (el && c && c.width && el.dataset.imageIndex && !el.classList.contains('vp-blank')) {
      return performance.now() - t0;
    }
    if (performance.now() - t0 > 60000) return -1;
  }
}
"""

# In the page: until the first canvas has a non-black pixel (OHIF: its viewport canvas).
FIRST_PIXELS = """
async (t0) => {
  for (;;) {
    await new Promise((r) => requestAnimationFrame(r));
    const all = document.querySelectorAll('canvas.cornerstone-canvas, .viewport-element canvas');
    for (const c of all) {
      if (!c.width || !c.height) continue;
      const ctx = c.getContext('2d');
      if (!ctx) continue;
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 4 * 97) {
        if (d[i] > 8 || d[i + 1] > 8 || d[i + 2] > 8) return performance.now() - t0;
      }
    }
    if (performance.now() - t0 > 60000) return -1;
  }
}
"""

# In the page: one ArrowDown per animation frame; how many different slices were shown (at most
# one per animation frame: the display's rate, also reported, is the ceiling). work: per frame,
# the time from the frame's start (the rAF timestamp) to this script's rAF callback, which runs
# after the viewer's own (registered earlier in the frame: the batched step, the slice drawn in
# that frame) — the main thread's cost of a slice. idle: the same page's frame rate without
# scrolling, i.e. what the display (headless chromium's compositor here) gives.
SCROLL = """
async ([frames, selector]) => {
  const el = document.querySelector(selector);
  const target = el.closest('.vp-cell') || el;
  let changes = 0, last = el.dataset.imageIndex;
  const work = [];
  const t0 = performance.now();
  for (let i = 0; i < frames; i++) {
    target.dispatchEvent(new KeyboardEvent('keydown', { key: 'ArrowDown', bubbles: true }));
    work.push(await new Promise((r) => requestAnimationFrame((ts) => r(performance.now() - ts))));
    if (el.dataset.imageIndex !== last) { changes += 1; last = el.dataset.imageIndex; }
  }
  const seconds = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  for (let i = 0; i < frames; i++) await new Promise((r) => requestAnimationFrame(r));
  const idle = frames / ((performance.now() - t1) / 1000);
  work.sort((a, b) => a - b);
  const at = (q) => work[Math.floor((work.length - 1) * q)];
  return { changes, seconds, idle, work: at(0.5), work95: at(0.95) };
}
"""

SERIES_LOADED = """
(uid) => {
  const bar = document.querySelector(`.series-item[data-uid="${uid}"] progress`);
  return bar && bar.hidden && Number(bar.max) > 1 && Number(bar.value) >= Number(bar.max);
}
"""


def complete_studies(hub: HubProcess, files: list[Path]) -> dict[str, list[str]]:
    """Mark the loaded studies complete (as a gateway does), so they are on the worklist."""
    studies: dict[str, list[str]] = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        studies.setdefault(str(ds.StudyInstanceUID), []).append(str(ds.SOPInstanceUID))
    headers = {"Authorization": f"Bearer {hub.gateway_tokens['clinic-a']}"}
    with httpx.Client(base_url=hub.url, headers=headers, timeout=60) as client:
        for uid, sops in studies.items():
            r = client.post(
                f"/api/v1/ingest/studies/{uid}/complete", json={"sop_instance_uids": sops}
            )
            r.raise_for_status()
    return studies


def renderer_rss() -> int:
    """Largest RSS (bytes) among chromium renderer processes (the benchmark's one tab)."""
    best = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"--type=renderer" not in cmd or b"chrom" not in cmd:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    best = max(best, int(line.split()[1]) * 1024)
        except OSError:
            continue
    return best


def login(page: Page, hub: HubProcess) -> None:
    page.goto(f"{hub.url}/")
    page.fill("#login-username", "rad1")
    page.fill("#login-password", hub.passwords["rad1"])
    page.click("#login-submit")
    page.wait_for_selector("#worklist-table")


def ours_first_image(page: Page, hub: HubProcess, uid: str) -> float:
    page.goto(f"{hub.url}/#/worklist?status=unread&limit=50")
    page.wait_for_selector(f'tr[data-uid="{uid}"]')
    ms = float(page.evaluate(OURS_FIRST_IMAGE, uid))
    if ms < 0:
        raise SystemExit(f"our viewer drew no image of {uid} in 60 s")
    return ms


def bench_ours(
    browser: Browser,
    hub: HubProcess,
    dx: str,
    ct: str,
    ct_series: str,
    runs: int,
    renderer: str = "auto",
) -> dict[str, Any]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    if renderer != "auto":  # the page's switch (docs/browser-app.md)
        context.add_init_script(
            f"localStorage.setItem('imaging-hub.viewer.renderer', {json.dumps(renderer)})"
        )
    page = context.new_page()
    login(page, hub)
    ours_first_image(page, hub, dx)  # warm: the app's files in the browser's cache
    out: dict[str, Any] = {
        "dx": [],
        "ct": [],
        "ct_loaded": [],
        "fps": [],
        "display": [],
        "idle": [],
        "work": [],
        "work95": [],
        "rss": [],
        "mode": page.eval_on_selector("#viewer-grid", "(g) => g.dataset.renderer || ''"),
        "webgl": page.eval_on_selector("#viewer-grid", "(g) => g.dataset.webgl || ''"),
    }
    for _ in range(runs):
        out["dx"].append(ours_first_image(page, hub, dx))
        page.goto(f"{hub.url}/#/worklist")
        page.wait_for_selector("#worklist-table")
        page.wait_for_timeout(500)
        before = renderer_rss()
        t0 = time.perf_counter()
        out["ct"].append(ours_first_image(page, hub, ct))
        page.wait_for_function(SERIES_LOADED, arg=ct_series, timeout=180000, polling=50)
        out["ct_loaded"].append((time.perf_counter() - t0) * 1000)
        page.wait_for_timeout(300)
        out["rss"].append(renderer_rss() - before)
        page.keyboard.press("Home")
        page.wait_for_timeout(200)
        result = page.evaluate(SCROLL, [240, "[data-testid=viewport]"])
        out["fps"].append(result["changes"] / result["seconds"])
        out["display"].append(240 / result["seconds"])  # animation frames per second
        out["idle"].append(result["idle"])
        out["work"].append(result["work"])
        out["work95"].append(result["work95"])
    context.close()
    return out


class StaticServer:
    """OHIF's dist/ as it is (one changed file, app-config.js, served from memory)."""

    def __init__(self, root: Path, app_config: str, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        config = app_config.encode()

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/app-config.js":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/javascript")
                    self.send_header("Content-Length", str(len(config)))
                    self.end_headers()
                    self.wfile.write(config)
                    return
                if not (root / path.lstrip("/")).is_file():
                    self.path = "/index.html"  # the single-page app's routes
                super().do_GET()

            def end_headers(self) -> None:
                self.send_header("Cache-Control", "max-age=3600")  # its files are content-hashed
                super().end_headers()

        Handler.extensions_map = {**Handler.extensions_map, ".wasm": "application/wasm"}
        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", self.port), partial(Handler, directory=str(root))
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "StaticServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


def ohif_config(dist: Path, hub_url: str) -> str:
    text = (dist / "app-config.js").read_text(encoding="utf-8")
    text = text.replace("https://d14fa38qiwhyfd.cloudfront.net/dicomweb", f"{hub_url}/dicomweb")
    text = text.replace("staticWado: true", "staticWado: false")
    if f"{hub_url}/dicomweb" not in text:
        raise SystemExit("OHIF's app-config.js has no data source root to point at the hub")
    return text


def bench_ohif(
    browser: Browser, hub: HubProcess, server: StaticServer, dx: str, ct: str, runs: int
) -> dict[str, Any]:
    token = httpx.post(
        f"{hub.url}/api/v1/auth/token",
        data={"username": "rad1", "password": hub.passwords["rad1"]},
        timeout=30,
    ).json()["access_token"]
    context = browser.new_context(
        viewport=VIEWPORT,  # type: ignore[arg-type]
        extra_http_headers={"Authorization": f"Bearer {token}"},
    )
    page = context.new_page()
    out: dict[str, Any] = {"dx": [], "ct": [], "ct_loaded": [], "rss": []}
    frames: list[float] = []
    page.on(
        "requestfinished",
        lambda r: frames.append(time.perf_counter()) if "/frames/" in r.url else None,
    )

    def first_image(uid: str) -> float:
        page.goto("about:blank")
        t0 = time.perf_counter()
        page.goto(f"{server.url}/viewer?StudyInstanceUIDs={uid}")
        ms = float(page.evaluate(FIRST_PIXELS, 0))
        if ms < 0:
            raise SystemExit(f"OHIF drew no image of {uid} in 60 s")
        return (time.perf_counter() - t0) * 1000

    first_image(dx)  # warm: OHIF's files in the browser's cache
    for _ in range(runs):
        out["dx"].append(first_image(dx))
        page.goto("about:blank")
        page.wait_for_timeout(500)
        before = renderer_rss()
        frames.clear()
        t0 = time.perf_counter()
        out["ct"].append(first_image(ct))
        deadline = time.perf_counter() + 180
        while len(frames) < 300 and time.perf_counter() < deadline:
            page.wait_for_timeout(50)
        out["ct_loaded"].append((max(frames) - t0) * 1000 if len(frames) >= 300 else float("nan"))
        page.wait_for_timeout(300)
        out["rss"].append(renderer_rss() - before)
    context.close()
    return out


@contextmanager
def hub_with_corpus(
    workdir: Path, corpus: Path, extra_env: dict[str, str]
) -> Iterator[tuple[HubProcess, list[Path], list[Path]]]:
    dx_files, ct_files = corpus_files(corpus)
    hub = start_hub_process(workdir / "hub", extra_env=extra_env)
    try:
        load_hub(hub, dx_files + ct_files)
        complete_studies(hub, dx_files + ct_files)
        yield hub, dx_files, ct_files
    finally:
        hub.stop()


def fmt(values: list[float], unit: str = "ms") -> str:
    good = [v for v in values if v == v]
    return f"{median(good):.0f} {unit}" if good else "n/a"


def ratio(theirs: list[float], ours: list[float]) -> str:
    a = [v for v in theirs if v == v]
    b = [v for v in ours if v == v]
    return f"{median(a) / median(b):.2f}" if a and b else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=ROOT / "var" / "bench" / "corpus")
    parser.add_argument("--ohif", type=Path, default=None, help="OHIF's dist/ directory")
    parser.add_argument("--ohif-version", default="3.13.2")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--renderer",
        choices=["auto", "gpu", "cpu"],
        default="auto",
        help="our viewer's drawing path (auto: CPU where WebGL is a software rasteriser)",
    )
    args = parser.parse_args()
    info = machine()
    ohif_port = free_port()
    ohif_origin = f"http://127.0.0.1:{ohif_port}"
    env = {"IMAGING_HUB_CORS_ORIGINS": json.dumps([ohif_origin])}
    ohif_error = ""
    with (
        tempfile.TemporaryDirectory() as tmp,
        hub_with_corpus(Path(tmp), args.corpus, env) as (
            hub,
            dx_files,
            ct_files,
        ),
    ):
        dx = str(pydicom.dcmread(dx_files[0], stop_before_pixels=True).StudyInstanceUID)
        ct_ds = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
        ct, ct_series = str(ct_ds.StudyInstanceUID), str(ct_ds.SeriesInstanceUID)
        ct_pixel_bytes = 300 * 512 * 512 * 2
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ours = bench_ours(browser, hub, dx, ct, ct_series, args.runs, args.renderer)
            ohif: dict[str, Any] | None = None
            if args.ohif is not None:
                try:
                    config = ohif_config(args.ohif, hub.url)
                    with StaticServer(args.ohif, config, ohif_port) as server:
                        ohif = bench_ohif(browser, hub, server, dx, ct, args.runs)
                except (SystemExit, Exception) as exc:  # report what blocked OHIF, keep ours
                    ohif_error = f"{type(exc).__name__}: {exc}"
                    print("OHIF failed:", ohif_error)
            else:
                ohif_error = "not run (no --ohif directory given)"
            browser.close()
        chromium = subprocess.run(
            [CHROMIUM, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()

    rows = [
        "| case | ours (median) | OHIF (median) | OHIF / ours |",
        "| --- | --- | --- | --- |",
    ]
    for key, label in (
        ("dx", "DX 3000x2500 12-bit: click → first image"),
        ("ct", "CT 300 slices: click → first slice"),
        ("ct_loaded", "CT: whole series loaded"),
    ):
        theirs = ohif[key] if ohif else []
        rows.append(f"| {label} | {fmt(ours[key])} | {fmt(theirs)} | {ratio(theirs, ours[key])} |")
    rows.append(
        f"| CT: scrolling the loaded series | {median(ours['fps']):.0f} slices/s (display: "
        f"{median(ours['display']):.0f} frames/s while scrolling, {median(ours['idle']):.0f} idle; "
        f"main thread per slice: {median(ours['work']):.1f} ms, p95 "
        f"{median(ours['work95']):.1f} ms) | — | — |"
    )
    mib = 1024 * 1024
    ours_rss = median(ours["rss"]) / mib
    theirs_rss = f"{median(ohif['rss']) / mib:.0f} MiB" if ohif else "n/a"
    rows.append(
        f"| CT: tab (renderer) RSS growth | {ours_rss:.0f} MiB "
        f"({median(ours['rss']) / ct_pixel_bytes:.2f}× the {ct_pixel_bytes / mib:.0f} MiB of "
        f"pixels) | {theirs_rss} | — |"
    )
    targets = [
        f"- Targets: ours ≤ 500 ms to the first image and ≤ OHIF; scrolling ≥ 60 slices/s; whole "
        f"CT no slower than OHIF; tab memory ≤ 2× the pixel bytes. Runs: {args.runs} per case "
        "(after one warm-up), alternating DX and CT.",
        "- Ours: click on the worklist row → the viewport's canvas shown for an image of its own "
        "series (the app's files revalidated: `no-cache` + ETag, gzip). OHIF: the viewer URL "
        "opened with its files cached → first non-black canvas pixel (its study list is not "
        "timed, which favours OHIF slightly); OHIF reaches the hub cross-origin (CORS, bearer "
        "token on every request, one preflight per new URL), ours same-origin with the session "
        "cookie. Whole CT for OHIF: the last of the 300 frame responses.",
        "- Tab memory: the RSS growth of chromium's renderer process; decoded pixels in GPU "
        "textures (Swiftshader here, --disable-gpu) are not in it.",
    ]
    if ohif_error:
        targets.append(f"- OHIF: {ohif_error}")
    met = {
        "first image ≤ 500 ms (DX, CT)": max(median(ours["dx"]), median(ours["ct"])) <= 500,
        "scrolling ≥ 60 slices/s": median(ours["fps"]) >= 60,
        "tab memory ≤ 2× pixels": median(ours["rss"]) <= 2 * ct_pixel_bytes,
    }
    if ohif:
        met["first image ≤ OHIF (DX, CT)"] = all(
            median(ours[k]) <= median(ohif[k]) for k in ("dx", "ct")
        )
        met["whole CT ≤ OHIF"] = median(ours["ct_loaded"]) <= median(
            [v for v in ohif["ct_loaded"] if v == v] or [float("inf")]
        )
    targets.append(
        "- Verdict in this run: "
        + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in met.items())
        + "."
    )
    targets.append(
        f"- Our drawing path: {ours['mode'] or '?'} (`--renderer {args.renderer}`; WebGL "
        f"renderer: {ours['webgl'] or 'none'})."
    )
    for line in rows:
        print(line)
    for key in ("dx", "ct", "fps", "display", "idle", "work", "work95"):
        print(f"ours {key}: " + ", ".join(f"{v:.0f}" for v in ours[key]))
    lines = [
        *machine_lines(
            info,
            {
                "chromium": chromium,
                "OHIF": f"@ohif/app {args.ohif_version}" if ohif else "not measured",
                "Cornerstone3D": "5.14.0",
            },
        ),
        "",
        *rows,
        "",
        *targets,
    ]
    if not args.no_write:
        write_section("viewer", lines, title="Viewer: first image, scrolling, memory (issue 16)")


if __name__ == "__main__":
    main()
