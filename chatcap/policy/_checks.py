"""Parameter checks shared by the policies: one clear ValueError naming the field and range."""

from __future__ import annotations

import math


def check_positive(name: str, value: float) -> None:
    """Require a finite number > 0."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_non_negative(name: str, value: float) -> None:
    """Require a finite number >= 0."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_whole(name: str, value: float, minimum: int) -> None:
    """Require a whole number >= minimum (an int, or a float such as 10.0 from TOML)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (is_number and math.isfinite(value) and value == int(value) and value >= minimum):
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def check_in_range(name: str, value: float, low: float, high: float) -> None:
    """Require low <= value <= high."""
    if not (isinstance(value, int | float) and low <= value <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
