#!/usr/bin/env bash
# Set up everything on a fresh Debian/Ubuntu machine: system libraries, a
# virtual environment in .venv, the CPU build of torch, the package and its test
# tools. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_PIN="torch==2.13.0"
# PyTorch's own index of CPU-only wheels; the default index serves CUDA builds on Linux.
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"

need=()
dpkg -s libfluidsynth3 >/dev/null 2>&1 || need+=(libfluidsynth3)
command -v abc2midi >/dev/null 2>&1 || need+=(abcmidi)
# a real browser for the tests of the pages (visuals, report): headless Chromium
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if ((${#need[@]})); then
  echo "setup: installing Debian packages: ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/pip install -q --disable-pip-version-check)

# torch: which build is installed (cpu / cuda <version> / none)?
torch_build() {
  .venv/bin/python - <<'EOF' 2>/dev/null || echo none
import torch
v = torch.__version__.split("+")[0]
print(f"{v} " + ("cpu" if torch.version.cuda is None else f"cuda{torch.version.cuda}"))
EOF
}
build=$(torch_build)
if [ "${build%% *}" != "${TORCH_PIN#torch==}" ]; then
  # Pin torch first, from the CPU index: an unpinned torch from the default index
  # pulls gigabytes of NVIDIA packages. Where the CPU index cannot be reached
  # (offline mirrors), fall back to the default index, which on such machines
  # serves the CPU wheel.
  if "${pip[@]}" --timeout 20 --retries 1 --index-url "$TORCH_CPU_INDEX" "$TORCH_PIN" \
      2>/dev/null; then
    echo "setup: installed $TORCH_PIN with the PyTorch CPU index as the index"
  else
    echo "setup: the PyTorch CPU index could not be reached; installing $TORCH_PIN" \
         "from the default index"
    "${pip[@]}" "$TORCH_PIN"
  fi
  build=$(torch_build)
fi
echo "setup: torch ${build} build"
case "$build" in
  *cuda*) echo "setup: note: this torch is a CUDA build (the CPU index was not used);" \
               "everything runs on CPU as well" ;;
esac

"${pip[@]}" -e ".[test]"
echo "setup: ready (.venv)"
