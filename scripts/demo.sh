#!/usr/bin/env bash
# Install the project into .venv and run the demo on a machine with no GPU and no camera:
# a tiny random-weight checkpoint -> bundle -> synthetic RealSense recordings -> control loop
# (ONNX Runtime, simulated arm) -> summary and profile report with plots.
# Arguments go to `rdvla demo`, e.g. `bash scripts/demo.sh --quick` (the short form CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/rdvla demo --out "${RDVLA_DEMO_DIR:-out/demo}" "$@"
