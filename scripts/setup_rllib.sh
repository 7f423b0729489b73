#!/usr/bin/env bash
# Set up the optional Ray RLlib backend in its own environment, .venv-rllib.
#
# Why a second venv: ray[rllib] pins gymnasium==1.2.2, while the main .venv has
# gymnasium 1.4; installing RLlib there would downgrade it under every other
# command. .venv-rllib holds the same project (editable) with the `rllib` extra,
# i.e. gymnasium 1.2.2, and is used only for `st-agent train --backend rllib`,
# `st-agent train-jam --backend rllib` and tests/test_rllib*.py. Policies it
# exports are plain safetensors + JSON files, which the main .venv runs unchanged.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

RAY_PIN="ray[rllib]==2.60.0"
GYM_PIN="gymnasium==1.2.2"
TORCH_PIN="torch==2.13.0"
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
VENV=.venv-rllib

python=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$python" -m venv "$VENV"
pip=("$VENV/bin/pip" install -q --disable-pip-version-check)

have=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])" \
       2>/dev/null || echo none)
if [ "$have" != "${TORCH_PIN#torch==}" ]; then
  # the CPU build first (the default index serves CUDA builds on Linux), as setup.sh does
  "${pip[@]}" --timeout 20 --retries 1 --index-url "$TORCH_CPU_INDEX" "$TORCH_PIN" \
      2>/dev/null || "${pip[@]}" "$TORCH_PIN"
fi
if ! "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as md, sys
ok = md.version("ray") == "2.60.0" and md.version("gymnasium") == "1.2.2"
import st_agent  # noqa: F401  (the project, editable)
sys.exit(0 if ok else 1)
PY
then
  # the `rllib` extra of pyproject.toml when it has one; the same pins otherwise
  if grep -q '^rllib *=' pyproject.toml; then
    "${pip[@]}" -e ".[test,rllib]"
  else
    "${pip[@]}" -e ".[test]" "$RAY_PIN" "$GYM_PIN"
  fi
fi
"$VENV/bin/python" -c "import ray, gymnasium; print(f'setup: ray {ray.__version__}, gymnasium {gymnasium.__version__}')"
echo "setup: ready ($VENV)"
