#!/usr/bin/env bash
# Install the project into .venv and run the demo: a tiny random-weight checkpoint, one policy query.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
rdvla=.venv/bin/rdvla
work=${RDVLA_DEMO_DIR:-out/demo}
rm -rf "$work" && mkdir -p "$work"

echo "==> writing a tiny random-weight checkpoint (released layout)"
$rdvla init-checkpoint --preset tiny --out "$work/checkpoint" --seed 0
echo "==> two synthetic 256x256 camera frames (third-person, wrist)"
.venv/bin/python - "$work" <<'PY'
import sys
import numpy as np
from PIL import Image
y, x = np.mgrid[0:256, 0:256]
for name, phase in (("agentview", 0.0), ("wrist", 1.0)):
    rgb = np.stack([128 + 100 * np.sin(x / 17 + phase), 128 + 100 * np.cos(y / 23), (x + y) % 256], -1)
    Image.fromarray(rgb.astype(np.uint8)).save(f"{sys.argv[1]}/{name}.png")
PY
echo "==> one policy query with adaptive halting (adjacent-action MSE < 1e-3)"
$rdvla predict "$work/checkpoint" --image "$work/agentview.png" --image "$work/wrist.png" \
  --instruction "put the bowl on the plate" --proprio 0.1,0.0,0.2,0.0,3.1,0.0,0.04,-0.04 \
  --halting mse:1e-3 --out "$work/actions.npz"
