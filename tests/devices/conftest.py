"""Fixtures for the devices tests: a fake clock (the recording they read, `episode`, is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from rdvla.devices.testing import FakeClock


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
