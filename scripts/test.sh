#!/usr/bin/env bash
# Install the project with its test tools into .venv, then run the checks and the CPU test tier.
set -euo pipefail
cd "$(dirname "$0")/.."
# CI must test the native extension: a failed build fails the install instead of falling back to numpy.
export RDVLA_REQUIRE_NATIVE=1
bash scripts/install.sh --dev
py=.venv/bin/python

echo "==> ruff"
.venv/bin/ruff check --quiet .
echo "==> shellcheck"
.venv/bin/shellcheck scripts/*.sh .ci/run
echo "==> mypy (TensorRT code against tensorrt-stubs)"
$py scripts/typecheck_tensorrt.py
echo "==> pytest"
$py -m pytest tests -q "$@"
