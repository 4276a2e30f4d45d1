#!/usr/bin/env bash
# Downloads (here, where PyPI is reachable) the cp312 manylinux wheels that the GPU machine lacks, into .whl/
# (git-ignored). The machine already has jax, numpy, scipy, opencv-python-headless, pandas, pillow, h5py, rich,
# absl-py, ml-dtypes, packaging, pyyaml and typing-extensions. Versions match requirements-jax.txt / .venv-jax.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  keras==3.15.1 namex==0.1.0 optree==0.20.0 \
  albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5 stringzilla==5.3.2 simsimd==6.5.16
ls -la .whl
du -sh .whl
