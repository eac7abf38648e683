#!/usr/bin/env bash
# Create the project-local virtual environment .venv/ and install jodiff with every pinned
# dependency, mmcv 2.1.0 built from source with its ops included. Safe to re-run: finished
# steps are skipped (a stamp keyed on this script and settings.ini; a wheel cache keyed on
# the torch version and Python ABI for the slow mmcv build).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH="torch==2.12.1 torchvision==0.27.1"
MMCV=2.1.0
WHEEL_CACHE=${JODIFF_WHEEL_CACHE:-$HOME/.cache/jodiff/wheels}

key=$(cat tools/install.sh settings.ini setup.py | sha256sum | cut -c1-16)
stamp="$VENV/.jodiff-installed-$key"
if [ -f "$stamp" ]; then echo "install: up to date ($stamp)"; exit 0; fi
t0=$(date +%s)
step() { echo "install [$(( $(date +%s) - t0 ))s]: $*"; }

if [ ! -x "$VENV/bin/python" ]; then step "creating $VENV with $($PYTHON --version)"; "$PYTHON" -m venv "$VENV"; fi
PY="$VENV/bin/python"
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }

step "build tools"
pip install -q "pip<26" wheel "setuptools<81" ninja

step "torch and torchvision (one matched build)"
pip install -q $TORCH
"$PY" - <<'PYEOF'
import torch, torchvision
b = torch.tensor([[0., 0, 1, 1], [0, 0, 1, 1]])
assert torchvision.ops.nms(b, torch.tensor([1., .5]), .5).tolist() == [0], "torchvision.ops.nms gave a wrong answer"
print(f"  torch {torch.__version__}, torchvision {torchvision.__version__}: ops.nms runs")
PYEOF

if "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV')" 2>/dev/null; then
  step "mmcv $MMCV with ops already installed"
else
  tag=$("$PY" -c 'import torch, sys; print(f"torch-{torch.__version__}-cp{sys.version_info[0]}{sys.version_info[1]}")')
  cache="$WHEEL_CACHE/$tag"
  mkdir -p "$cache"
  if ! ls "$cache"/mmcv-$MMCV-*.whl >/dev/null 2>&1; then
    step "building mmcv $MMCV with ops against $tag (11-16 minutes on 2 cores)"
    pip install -q "mmengine==0.10.7"
    tmp=$(mktemp -d "$cache/build.XXXX")
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} pip wheel -q "mmcv==$MMCV" --no-build-isolation --no-deps --no-cache-dir -w "$tmp"
    mv "$tmp"/mmcv-$MMCV-*.whl "$cache"/ && rmdir "$tmp"
  fi
  step "installing mmcv from $cache"
  pip install -q "$cache"/mmcv-$MMCV-*.whl
fi

step "jodiff and its pinned requirements (editable, with dev tools)"
pip install -q -e ".[dev]"

step "checks"
pip check
"$PY" - <<'PYEOF'
import mmcv, mmcv.ops, mmseg, mmdet, diffusers, transformers, segment_anything
from mmcv.ops import nms
print(f"  mmcv {mmcv.__version__} (ops compiled), mmseg {mmseg.__version__}, mmdet {mmdet.__version__}, "
      f"diffusers {diffusers.__version__}, transformers {transformers.__version__}")
PYEOF
rm -f "$VENV"/.jodiff-installed-*
touch "$stamp"
step "done"
