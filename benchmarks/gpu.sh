#!/usr/bin/env bash
# GPU figures for issue 6 (docs/distributed.md): the D4 SIDDA step at 100x100 with 128 + 128
# images in fp32, bf16 autocast and with channels_last, and one SIDDA epoch of the shapes
# experiment (sidda data make shapes --n-per-class 1000 --image-size 100). Prints a markdown
# table and writes step.json, epoch.json and results.md to $OUT (default ./gpu_results).
#
#   benchmarks/gpu.sh                            # on a GPU machine, from the repository root
#   OUT=/tmp/figures benchmarks/gpu.sh --steps 50
#   benchmarks/gpu.sh --device cpu --quick       # smoke test of the script on a CPU
#
# Needs the project's venv (.venv, or $PY) with a CUDA build of torch. The torch that
# `make install` pins is the CPU build, and a GPU machine may have no internet access, so this
# script installs nothing: install the CUDA wheel first, where there is a network, e.g.
#   .venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126
# Extra arguments go to benchmarks/gpu_step.py (--steps, --warmup-steps, --only step|epoch,
# --model, --device, --quick). Device time: about 2 minutes on one H100-class GPU (data
# generation, 4 x 40 steps, 2 x 2 short epochs).
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-./gpu_results}

if [[ ! -x $PY ]]; then
    echo "gpu.sh: no python at $PY; run 'make install' (or set PY=/path/to/python)" >&2
    exit 2
fi

device=cuda
for ((i = 1; i <= $#; i++)); do
    if [[ ${!i} == --device ]]; then
        j=$((i + 1))
        device=${!j:-cuda}
    elif [[ ${!i} == --device=* ]]; then
        device=${!i#--device=}
    fi
done

if [[ $device == cuda* ]]; then
    "$PY" - <<'EOF' || exit 2
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(
        f"gpu.sh: CUDA is not available to torch {torch.__version__} "
        f"(CUDA build: {torch.version.cuda or 'none'}). Install a CUDA build of torch into the "
        "venv first (this script installs nothing), e.g. .venv/bin/pip install torch==2.13.0 "
        "--index-url https://download.pytorch.org/whl/cu126, or pass --device cpu --quick "
        "for a smoke test."
    )
print(f"gpu.sh: {torch.cuda.get_device_name()} with torch {torch.__version__} "
      f"(CUDA {torch.version.cuda})", file=sys.stderr)
EOF
fi

mkdir -p "$OUT"
has_device=0
for a in "$@"; do [[ $a == --device* ]] && has_device=1; done
if ((has_device)); then
    "$PY" benchmarks/gpu_step.py --out "$OUT" "$@"
else
    "$PY" benchmarks/gpu_step.py --out "$OUT" --device cuda "$@"
fi
echo "gpu.sh: results in $OUT (step.json, epoch.json, results.md)" >&2
