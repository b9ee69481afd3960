"""Typed access to the mappings of a YAML setup file, with errors that name the field path.

e.g. ``cameras[1].serial: expected a string, got integer 123 (quote serial numbers)``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence


class ConfigError(ValueError):
    """The setup file is missing, not YAML, or has a field with a bad value (the message names it)."""


class Fields:
    """Typed access to one YAML mapping, with errors naming the field path."""

    def __init__(self, data: Any, path: str, allowed: Sequence[str]) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path or 'the file'}: expected a mapping, got {kind(data)}")
        unknown = [str(key) for key in data if key not in allowed]
        if unknown:
            raise ConfigError(f"{self._join(path, unknown[0])}: unknown field (known: {', '.join(allowed)})")
        self.data, self.path = data, path

    @staticmethod
    def _join(path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def where(self, key: str) -> str:
        return self._join(self.path, key)

    def raw(self, key: str, required: bool) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise ConfigError(f"{self.where(key)}: required")
            return None
        return self.data[key]

    def string(self, key: str, *, required: bool = False, hint: str = "") -> Optional[str]:
        value = self.raw(key, required)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{self.where(key)}: expected a string, got {kind(value)}{hint}")
        if value is not None and not value.strip():
            raise ConfigError(f"{self.where(key)}: must not be empty")
        return value

    def number(self, key: str, default: Optional[float] = None, *, minimum: float = 0.0, integer: bool = False) -> Any:
        value = self.raw(key, default is None)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            raise ConfigError(f"{self.where(key)}: expected {'an integer' if integer else 'a number'}, got {kind(value)}")
        if not math.isfinite(value) or value <= minimum:
            raise ConfigError(f"{self.where(key)}: must be greater than {minimum:g}, got {value}")
        return value

    def optional_number(self, key: str, *, integer: bool = False) -> Any:
        return self.number(key, None, integer=integer) if self.raw(key, False) is not None else None

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.where(key)}: expected true or false, got {kind(value)}")
        return value

    def vector3(self, key: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
        value = self.raw(key, False)
        if value is None:
            return default
        if not isinstance(value, list) or len(value) != 3:
            raise ConfigError(f"{self.where(key)}: expected a list of 3 numbers, got {kind(value)}")
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
                raise ConfigError(f"{self.where(key)}[{index}]: expected a number, got {kind(item)}")
        return (float(value[0]), float(value[1]), float(value[2]))


def kind(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
    if value is None:
        return "nothing"
    return f"{names.get(type(value), type(value).__name__)} {value!r}"[:80]
