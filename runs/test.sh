#!/usr/bin/env bash
# Install with the test extras and run the whole test suite (CPU only, a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0          # the CPU build; a looser pin pulls a multi-GB CUDA build
python -m pip install -q -e ".[dev,hf]"         # hf: transformers + datasets, so their tests run too
# the web demo's browser test drives Debian's Chromium; install it when missing (the test skips without it)
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    { timeout 900 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq \
        chromium chromium-driver; } >/dev/null 2>&1 || echo "warning: could not install chromium; the browser test skips"
  fi
fi
# offline inputs for tests when the shared folder is beside the checkout (CI); tests skip what is missing
if [ -d ../shared/tiktoken_cache ]; then export TIKTOKEN_CACHE_DIR="${TIKTOKEN_CACHE_DIR:-$(cd ../shared/tiktoken_cache && pwd)}"; fi
if [ -d ../shared/data ]; then export NANODLM_DATA_MIRROR="${NANODLM_DATA_MIRROR:-$(cd ../shared/data && pwd)}"; fi
ruff check .
python -m pytest
