#!/usr/bin/env bash
# Regenerate tests/fixtures/preprocess/*.npz with TensorFlow (see make_preprocess_fixtures.py).
# TensorFlow goes into its own virtualenv ($TFENV, default /tmp/rdvla-tfenv), never into .venv.
#   scripts/make_preprocess_fixtures.sh [--out DIR]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tfenv="${TFENV:-/tmp/rdvla-tfenv}"
python="${PYTHON:-python3.11}"
if [ ! -x "$tfenv/bin/python" ] || ! "$tfenv/bin/python" -c "import tensorflow" 2>/dev/null; then
  "$python" -m venv "$tfenv"
  "$tfenv/bin/pip" install --quiet --upgrade pip
  "$tfenv/bin/pip" install --quiet tensorflow-cpu numpy pillow \
    || "$tfenv/bin/pip" install --quiet tensorflow numpy pillow
fi
exec "$tfenv/bin/python" "$repo/scripts/make_preprocess_fixtures.py" "$@"
