"""The LIBERO simulator tier: CI installs the `libero` extra (scripts/install.sh --dev), so these run there."""

from __future__ import annotations

import pytest

pytest.importorskip("libero.libero", reason="the LIBERO simulator extra is not installed (pip install -e '.[libero]')")
