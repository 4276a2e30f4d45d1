#!/usr/bin/env bash
# GPU benchmark for a lent machine (Python 3.12, JAX, no TensorFlow, no network). From the repo root:
#   bench/fetch_wheels.sh            # here, once: downloads the missing wheels into .whl/
#   bench/gpu.sh [gpu_xception.py options]   # there, with .whl carried
# Prints compute-only and end-to-end img/s for Xception 299 bf16 and their ratio, then img/s of the series own
# training path (lib.train) on every GPU through keras.distribution; about 4-5 minutes on an H100 (not yet run).
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=jax NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec python3 bench/gpu_xception.py "$@"
