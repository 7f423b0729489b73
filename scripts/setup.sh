#!/usr/bin/env bash
# Set up everything on a fresh Debian/Ubuntu machine: system libraries, a
# virtual environment in .venv, the package and its test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
dpkg -s libfluidsynth3 >/dev/null 2>&1 || need+=(libfluidsynth3)
command -v abc2midi >/dev/null 2>&1 || need+=(abcmidi)
if ((${#need[@]})); then
  echo "setup: installing Debian packages: ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# Pin torch first: an unpinned torch would pull gigabytes of CUDA packages.
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
echo "setup: ready (.venv)"
