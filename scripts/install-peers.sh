#!/usr/bin/env bash
# Installs the system peers the tests drive (Debian packages). Idempotent; needs root for apt.
#   dcmtk        storescu / echoscu / storescp: the modality side of every DICOM test
#   postgresql   the production database path (binaries in /usr/lib/postgresql/15/bin)
#   chromium     the browser for the Playwright end-to-end tests
#   fonts-wqy-microhei  a CJK font: Chinese in screenshots and in reportlab PDFs
#   poppler-utils       pdftoppm / pdftotext: the report PDFs rendered and read back in tests
#   docker-compose      validates docker/compose.yml (no Docker engine runs here)
#   shellcheck          checks deploy/gateway/install.sh and the compose file's bucket script
#   systemd             systemd-analyze verifies deploy/gateway/imaging-hub-gateway.service
set -euo pipefail
#   extra package names as arguments, e.g. `install-peers.sh orthanc` (make bench-peers)
packages=(dcmtk postgresql chromium fonts-wqy-microhei poppler-utils iproute2 docker-compose shellcheck systemd "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system peers present: ${packages[*]}"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${missing[*]}; run: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"
