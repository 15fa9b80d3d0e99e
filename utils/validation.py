"""Argument checks shared by the CLIs and library entry points.

Why one helper: a NaN or infinite float passes every `<` / `>` comparison silently (`nan < 0` is False),
so a bare range check accepts it and the run produces NaN scores with exit code 0. `check_finite` rejects
non-numbers, NaN, ±inf and out-of-range values with a `ValueError` that names the argument.
(Remote-code modules cannot import this package and carry their own inline copy of the rule.)
"""

from __future__ import annotations

import math
import numbers


def check_finite(name: str, value, *, low=None, high=None, low_inclusive: bool = True,
                 high_inclusive: bool = True) -> float:
    """Return `value` as a float when it is a finite real number within `[low, high]`; else raise `ValueError`.

    `low` / `high` are optional bounds; `low_inclusive=False` makes the lower bound strict (`value > low`).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if low is not None and (value < low or (not low_inclusive and value == low)):
        raise ValueError(f"{name} must be {'>=' if low_inclusive else '>'} {low}, got {value!r}.")
    if high is not None and (value > high or (not high_inclusive and value == high)):
        raise ValueError(f"{name} must be {'<=' if high_inclusive else '<'} {high}, got {value!r}.")
    return value


def check_positive_int(name: str, value) -> int:
    """Return `value` when it is an int >= 1 (bools rejected); else raise `ValueError` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


__all__ = ["check_finite", "check_positive_int"]
