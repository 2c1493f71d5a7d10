# Two commands on a fresh machine with Python 3.11+ and make:
#   make demo   runs `imaging-hub demo` on embedded defaults (SQLite + files under var/demo)
#   make test   installs the test peers (dcmtk, PostgreSQL, chromium: needs root/apt) and runs
#               ruff, mypy and the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck peers unit clean bench bench-peers viewer viewer-check lock guide-screenshots

# Exact versions with hashes of every dependency (runtime + test extras) from the lock file,
# then the project itself without resolving anything again.
LOCK := requirements/test-lock.txt
PIP_TOOLS := pip-tools==7.7.0

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

# Refresh the lock files from pyproject.toml's ranges (PyPI only), reinstall, run the tests.
# build-lock.txt (from build.in): what the Dockerfiles and deploy/gateway/install.sh build with.
lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q $(PIP_TOOLS)
	cd requirements && PIP_CONFIG_FILE=/dev/null ../.venv-lock/bin/pip-compile --quiet --upgrade --allow-unsafe --generate-hashes --no-emit-find-links --no-emit-index-url --strip-extras --output-file=lock.txt ../pyproject.toml
	cd requirements && PIP_CONFIG_FILE=/dev/null ../.venv-lock/bin/pip-compile --quiet --upgrade --allow-unsafe --generate-hashes --no-emit-find-links --no-emit-index-url --strip-extras --extra=test --output-file=test-lock.txt ../pyproject.toml
	cd requirements && PIP_CONFIG_FILE=/dev/null ../.venv-lock/bin/pip-compile --quiet --upgrade --allow-unsafe --generate-hashes --no-emit-find-links --no-emit-index-url --strip-extras --output-file=build-lock.txt build.in
	rm -rf .venv-lock
	rm -f $(STAMP)
	$(MAKE) test

demo: $(STAMP)
	$(BIN)/imaging-hub demo $(DEMO_ARGS)

peers:
	bash scripts/install-peers.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# Four pytest-xdist workers, one test file each at a time (a file's module fixtures stay in one
# worker): most tests wait on real peers (processes, sockets, a browser), so four workers finish
# the suite in about half the time of one even on two cores. PYTEST_WORKERS="-n 0": serial.
PYTEST_WORKERS ?= -n 4 --dist loadfile
test: $(STAMP) peers lint typecheck
	$(BIN)/python -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

# Benchmarks (not tests): bench/*.py, results into docs/benchmarks.md. Needs root for apt
# (Orthanc, its DICOMweb plugin) and, for bench.wan and bench.clinic_return, for network namespaces.
bench-peers: peers
	bash scripts/install-peers.sh orthanc orthanc-dicomweb

bench: $(STAMP) bench-peers
	$(BIN)/python -m bench.ingest $(BENCH_ARGS)
	$(BIN)/python -m bench.wan $(BENCH_WAN_ARGS)
	$(BIN)/python -m bench.clinic_return $(BENCH_CLINIC_RETURN_ARGS)
	$(BIN)/python -m bench.dicomweb $(BENCH_DICOMWEB_ARGS)
	$(BIN)/python -m bench.worklist
	$(BIN)/python -m bench.reports
	$(BIN)/python -m bench.viewer $(BENCH_VIEWER_ARGS)

# The diagnostic viewer's Cornerstone3D bundle (needs Node 20+ and npm): `viewer` rebuilds the
# committed src/imaging_hub/viewer_static/viewer/ from viewer/package-lock.json; `viewer-check`
# fails if the committed bundle differs from such a rebuild.
viewer:
	bash scripts/viewer-bundle.sh build

viewer-check:
	bash scripts/viewer-bundle.sh check

# The user guide's screenshots (docs/guide/img/), taken by tests/e2e/test_user_guide_screenshots.py
# in zh-CN and en; commit the PNGs it writes.
guide-screenshots: $(STAMP) peers
	bash scripts/guide-screenshots.sh

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
