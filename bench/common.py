"""Shared parts of the benchmarks: the corpus, processes, statistics and the results file.

Benchmarks are not tests: they run with ``make bench``, print their tables and rewrite their own
section of docs/benchmarks.md (between ``<!-- bench:NAME -->`` markers), with the machine and
the peers' versions measured in the same run.
"""

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from tests.peers.net import free_port, stop_process, wait_for_port

__all__ = ["free_port", "stop_process", "wait_for_port"]

ROOT = Path(__file__).resolve().parent.parent
GEN_CORPUS = ROOT.parent.parent / "shared" / "bench" / "gen_corpus.py"
RESULTS = ROOT / "docs" / "benchmarks.md"
CLI = [sys.executable, "-m", "imaging_hub"]


def gen_corpus_script() -> Path:
    """gen_corpus.py: $IMAGING_HUB_GEN_CORPUS, else ../shared/bench next to the checkout."""
    for candidate in (
        os.environ.get("IMAGING_HUB_GEN_CORPUS", ""),
        str(GEN_CORPUS),
        "/work/shared/bench/gen_corpus.py",
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise SystemExit("gen_corpus.py not found: set IMAGING_HUB_GEN_CORPUS to its path.")


def ensure_corpus(directory: Path, *, ct_copies: int, cr_copies: int) -> dict[str, int]:
    """Generate the corpus once (fixed seed, fresh UIDs per copy) and reuse it afterwards."""
    manifest = directory / "manifest.json"
    if manifest.is_file():
        data: dict[str, int] = json.loads(manifest.read_text())
        if data["ct_copies"] >= ct_copies and data["cr_copies"] >= cr_copies:
            return data
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    print(f"generating the corpus in {directory} ...", flush=True)
    subprocess.run(
        [
            sys.executable,
            str(gen_corpus_script()),
            "--out",
            str(directory),
            "--ct-copies",
            str(ct_copies),
            "--cr-copies",
            str(cr_copies),
        ],
        check=True,
    )
    loaded: dict[str, int] = json.loads(manifest.read_text())
    return loaded


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} is not installed: run `make bench` (it installs the peers).")
    return path


def dcmtk_env() -> dict[str, str]:
    """Debian's dcmtk leaves Nagle on unless TCP_NODELAY=1: ~45 ms stall per instance."""
    return dict(os.environ, TCP_NODELAY="1")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
                break
    load = os.getloadavg()
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load": f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min at the start)",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def package_version(name: str) -> str:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() or "not installed"


def machine_lines(info: dict[str, str], peers: dict[str, str]) -> list[str]:
    lines = [
        f"- Date: {info['date']}",
        f"- Machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory']} RAM, "
        f"Linux {info['kernel']}, Python {info['python']}",
        f"- Load average: {info['load']}",
        "- Peers: " + ", ".join(f"{k} {v}" for k, v in peers.items()),
        "- Other work on the machine shows in the load average above (2 cores; the benchmark "
        "just before counts too): absolute times drift with it; compare the ratios, which were "
        "measured in the same run.",
    ]
    return lines


def write_section(name: str, lines: Sequence[str], *, title: str) -> None:
    """Replace (or append) the ``name`` section of docs/benchmarks.md."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = "\n".join([start, f"## {title}", "", *lines, end])
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else ""
    if not text:
        text = (
            "# Benchmarks\n\nGenerated by the scripts in bench/ (`make bench`); "
            "do not edit the sections between the markers by hand.\n"
        )
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text, encoding="utf-8")
    print(f"wrote the {name} section of {RESULTS}")
