#!/usr/bin/env bash
# Installs everything the project needs that is missing: the Python venv with pinned packages
# and the pinned CDK CLI. Safe to run repeatedly; each part is skipped when its stamp is fresh.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# A venv whose pip does not run (e.g. created without Debian's python3-venv) is made anew.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  if ! "$PYTHON" -m venv .venv; then
    echo "install.sh: '$PYTHON -m venv' failed; on Debian/Ubuntu install python3-venv" >&2
    rm -rf .venv
    exit 1
  fi
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ] || [ constraints.txt -nt .venv/.installed ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "pip==25.3"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --group runtime --group dev -c constraints.txt
  touch .venv/.installed
fi

# Debian's chromium for the browser tests (Playwright drives it; Playwright's own browser download is
# not used). Without it the e2e tests fail and say so.
if ! command -v chromium >/dev/null 2>&1; then
  if ! { command -v apt-get >/dev/null 2>&1 && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; then
    echo "install.sh: could not install chromium (apt-get install chromium); the e2e tests need it" >&2
  fi
fi

if ! command -v npm >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "install.sh: npm is required for the CDK CLI (make synth/deploy)" >&2
    exit 1
  fi
fi
if [ ! -f node_modules/.installed ] || [ package.json -nt node_modules/.installed ] || [ package-lock.json -nt node_modules/.installed ]; then
  npm ci --silent --no-audit --no-fund
  touch node_modules/.installed
fi
