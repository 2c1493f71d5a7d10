#!/usr/bin/env bash
# Installs, upgrades or re-configures an imaging-hub clinic gateway on a Debian 12 mini PC.
# Idempotent: run it again after copying a newer release to upgrade, or with --token-file to
# put a rotated hub token in place; it keeps an existing /etc/imaging-hub/gateway.toml otherwise.
#
#   sudo deploy/gateway/install.sh --clinic clinic-a --ae-title CLINIC_A \
#       --hub-url https://hub.example.org --token-file /root/gateway-clinic-a.token
#
# Options:
#   --clinic CODE        the clinic's code at the hub (lower-case slug), first install only
#   --ae-title AE        the gateway's DICOM AE title (default CLINIC_<CODE>), first install only
#   --hub-url URL        the hub's base URL (https:// in production), first install only
#   --token-file FILE    a file holding the gateway's hub token (`imaging-hub admin gateway
#                        create` / `rotate`); or IMAGING_HUB_GATEWAY_HUB_TOKEN in the environment
#   --dicom-port PORT    the DICOM SCP port (default 11112), first install only
#   --hub-ca FILE        a PEM CA bundle for the hub's certificate, copied to /etc/imaging-hub
#   --source DIR         the imaging-hub release to install (default: this script's checkout)
#   --no-start           install and enable, but do not (re)start the service
#
# What it does: creates the system user `imaging-hub`; a virtualenv in /opt/imaging-hub/venv
# with every dependency from requirements/lock.txt checked against its hashes and the project
# installed without resolving anything; /etc/imaging-hub/gateway.toml (root:imaging-hub 0640);
# the spool in /var/lib/imaging-hub/spool; the systemd unit (enabled) and a journald drop-in.
set -euo pipefail

readonly USER_NAME=imaging-hub
readonly PREFIX=/opt/imaging-hub
readonly CONFIG_DIR=/etc/imaging-hub
readonly CONFIG="${CONFIG_DIR}/gateway.toml"
readonly STATE_DIR=/var/lib/imaging-hub
readonly UNIT=imaging-hub-gateway.service

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source_dir="$(cd "${here}/../.." && pwd)"
clinic=""
ae_title=""
hub_url=""
token_file=""
dicom_port=11112
hub_ca=""
start=1

die() {
  echo "install.sh: $*" >&2
  exit 2
}

need_value() {
  if [ "$#" -lt 2 ] || [ -z "$2" ]; then
    die "option $1 needs a value"
  fi
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    --clinic) need_value "$@"; clinic="$2"; shift 2 ;;
    --ae-title) need_value "$@"; ae_title="$2"; shift 2 ;;
    --hub-url) need_value "$@"; hub_url="$2"; shift 2 ;;
    --token-file) need_value "$@"; token_file="$2"; shift 2 ;;
    --dicom-port) need_value "$@"; dicom_port="$2"; shift 2 ;;
    --hub-ca) need_value "$@"; hub_ca="$2"; shift 2 ;;
    --source) need_value "$@"; source_dir="$2"; shift 2 ;;
    --no-start) start=0; shift ;;
    -h | --help) sed -n '2,25p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done

# --- everything is checked before anything is changed --------------------------------------

token=""
if [ -n "${token_file}" ]; then
  [ -r "${token_file}" ] || die "cannot read the token file ${token_file}"
  token="$(tr -d '[:space:]' <"${token_file}")"
elif [ -n "${IMAGING_HUB_GATEWAY_HUB_TOKEN:-}" ]; then
  token="${IMAGING_HUB_GATEWAY_HUB_TOKEN}"
fi
if [ -n "${token}" ] && ! [[ "${token}" =~ ^[A-Za-z0-9._~+/=-]{16,512}$ ]]; then
  die "the hub token has characters or a length a token from the hub never has"
fi

if [ ! -e "${CONFIG}" ]; then
  [ -n "${clinic}" ] || die "first install: --clinic is required"
  [ -n "${hub_url}" ] || die "first install: --hub-url is required"
  [ -n "${token}" ] || die "first install: a hub token is required (--token-file)"
fi
if [ -n "${clinic}" ] && ! [[ "${clinic}" =~ ^[a-z0-9][a-z0-9-]{0,62}$ ]]; then
  die "the clinic code must be a lower-case slug (letters, digits, '-'): ${clinic}"
fi
if [ -z "${ae_title}" ] && [ -n "${clinic}" ]; then
  ae_title="CLINIC_$(printf '%s' "${clinic#clinic-}" | tr '[:lower:]-' '[:upper:]_' | cut -c1-9)"
fi
if [ -n "${ae_title}" ] && ! [[ "${ae_title}" =~ ^[A-Z0-9_]{1,16}$ ]]; then
  die "the AE title must be 1 to 16 upper-case letters, digits or '_': ${ae_title}"
fi
if [ -n "${hub_url}" ] && ! [[ "${hub_url}" =~ ^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$ ]]; then
  die "the hub URL must be http(s)://host[:port][/path]: ${hub_url}"
fi
if ! [[ "${dicom_port}" =~ ^[0-9]{1,5}$ ]] || [ "${dicom_port}" -lt 1 ] || [ "${dicom_port}" -gt 65535 ]; then
  die "the DICOM port must be a number from 1 to 65535: ${dicom_port}"
fi
[ -z "${hub_ca}" ] || [ -r "${hub_ca}" ] || die "cannot read the hub CA file ${hub_ca}"
for f in requirements/lock.txt requirements/build-lock.txt pyproject.toml \
  deploy/gateway/imaging-hub-gateway.service deploy/gateway/journald-imaging-hub.conf; do
  [ -f "${source_dir}/${f}" ] || die "${source_dir} is not an imaging-hub release (no ${f})"
done
[ "$(id -u)" -eq 0 ] || die "run as root (sudo): it creates a user, /opt, /etc and a systemd unit"

# --- system packages and the service user ---------------------------------------------------

if ! python3 -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
fi
getent group "${USER_NAME}" >/dev/null || groupadd --system "${USER_NAME}"
if ! getent passwd "${USER_NAME}" >/dev/null; then
  useradd --system --gid "${USER_NAME}" --home-dir "${STATE_DIR}" --no-create-home \
    --shell /usr/sbin/nologin --comment "imaging-hub clinic gateway" "${USER_NAME}"
fi
install -d -o root -g root -m 0755 "${PREFIX}" "${PREFIX}/docs"
install -d -o root -g "${USER_NAME}" -m 0750 "${CONFIG_DIR}"
install -d -o "${USER_NAME}" -g "${USER_NAME}" -m 0750 "${STATE_DIR}" "${STATE_DIR}/spool"

# --- the virtualenv: hashes checked, nothing resolved ---------------------------------------

[ -x "${PREFIX}/venv/bin/python" ] || python3 -m venv "${PREFIX}/venv"
pip=("${PREFIX}/venv/bin/python" -m pip --disable-pip-version-check --no-cache-dir -q)
"${pip[@]}" install --require-hashes -r "${source_dir}/requirements/lock.txt"
"${pip[@]}" install --require-hashes -r "${source_dir}/requirements/build-lock.txt"
"${pip[@]}" install --no-deps --no-build-isolation --force-reinstall "${source_dir}"
"${PREFIX}/venv/bin/imaging-hub" --help >/dev/null
install -o root -g root -m 0644 "${source_dir}/docs/operations.md" "${PREFIX}/docs/operations.md"

# --- the configuration: written once, the token replaced on request ------------------------

umask 027
if [ -n "${hub_ca}" ]; then
  install -o root -g "${USER_NAME}" -m 0640 "${hub_ca}" "${CONFIG_DIR}/hub-ca.pem"
fi
if [ ! -e "${CONFIG}" ]; then
  tmp="$(mktemp "${CONFIG_DIR}/.gateway.toml.XXXXXX")"
  {
    echo "# imaging-hub clinic gateway; every setting: docs/configuration.md. Written by"
    echo "# deploy/gateway/install.sh; a re-run keeps this file (and replaces hub_token on request)."
    echo "[gateway]"
    echo "clinic = \"${clinic}\""
    echo "ae_title = \"${ae_title}\""
    echo "host = \"0.0.0.0\""
    echo "dicom_port = ${dicom_port}"
    echo "spool_dir = \"${STATE_DIR}/spool\""
    echo "hub_url = \"${hub_url}\""
    echo "hub_token = \"${token}\""
    if [ -n "${hub_ca}" ]; then echo "hub_ca_file = \"${CONFIG_DIR}/hub-ca.pem\""; fi
    echo "retention_hours = 168"
    echo "metrics_port = 9102"
  } >"${tmp}"
  chown root:"${USER_NAME}" "${tmp}"
  chmod 0640 "${tmp}"
  mv -f "${tmp}" "${CONFIG}"
  echo "wrote ${CONFIG}"
else
  if [ -n "${token}" ]; then
    tmp="$(mktemp "${CONFIG_DIR}/.gateway.toml.XXXXXX")"
    awk -v line="hub_token = \"${token}\"" \
      'BEGIN { done = 0 } /^hub_token[ \t]*=/ { print line; done = 1; next } { print }
       END { if (!done) exit 3 }' "${CONFIG}" >"${tmp}" || {
      rm -f "${tmp}"
      die "${CONFIG} has no hub_token line to replace; edit it by hand"
    }
    chown root:"${USER_NAME}" "${tmp}"
    chmod 0640 "${tmp}"
    mv -f "${tmp}" "${CONFIG}"
    echo "replaced the hub token in ${CONFIG}"
  fi
  [ -z "${clinic}${hub_url}" ] || echo "kept ${CONFIG}: --clinic/--hub-url apply to a first install only"
fi
chown root:"${USER_NAME}" "${CONFIG}"
chmod 0640 "${CONFIG}"

# --- systemd ---------------------------------------------------------------------------------

install -o root -g root -m 0644 "${source_dir}/deploy/gateway/imaging-hub-gateway.service" \
  "/etc/systemd/system/${UNIT}"
install -d -o root -g root -m 0755 /etc/systemd/journald.conf.d
install -o root -g root -m 0644 "${source_dir}/deploy/gateway/journald-imaging-hub.conf" \
  /etc/systemd/journald.conf.d/imaging-hub.conf
systemctl daemon-reload
systemctl restart systemd-journald
systemctl enable "${UNIT}" >/dev/null
if [ "${start}" -eq 1 ]; then
  # safe at any time: every instance a modality got Success for is already on disk
  systemctl restart "${UNIT}"
  systemctl --no-pager --lines=0 status "${UNIT}" || true
fi
echo "imaging-hub gateway installed; logs: journalctl -u ${UNIT}; state: imaging-hub gateway status --config ${CONFIG}"
