"""Range checks for numbers that come from users (config files, `--set`, CLI flags, API arguments).

NaN compares False with everything, so a check written as `if value < 0: raise` lets NaN through (and
`value > 0` lets inf through). `check_finite` is the one place that gets this right: every float a user
can set goes through it, or through a check built the same way (`math.isfinite` first, then the range).

    from mtgfe.utils.validation import check_finite
    alpha = check_finite("--alpha", alpha, low=0.0)            # ValueError naming --alpha on nan/inf/-1

Pure Python (no torch): a leaf of the import graph like the rest of `mtgfe.utils`.
"""

from __future__ import annotations

import math
import numbers


def check_finite(name: str, value, low: float | None = None, high: float | None = None, *,
                 low_inclusive: bool = True, high_inclusive: bool = True, error: type[Exception] = ValueError) -> float:
    """`value` as a float when it is a finite real number in the range; raises `error` naming `name` otherwise.

    `low` / `high`: bounds (None: unbounded on that side), inclusive unless `low_inclusive` /
    `high_inclusive` is False. Booleans are refused (`True` is not a weight). `error` lets callers raise
    their own subclass of ValueError (e.g. the trainer's `ConfigError`).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(f"{name}={value!r} must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise error(f"{name}={value!r} must be a finite number (not nan or inf)")
    if low is not None and (number < low or (not low_inclusive and number == low)):
        raise error(f"{name}={value!r} must be {'>=' if low_inclusive else '>'} {low}"
                    + (f" and {'<=' if high_inclusive else '<'} {high}" if high is not None else ""))
    if high is not None and (number > high or (not high_inclusive and number == high)):
        raise error(f"{name}={value!r} must be {'<=' if high_inclusive else '<'} {high}"
                    + (f" and {'>=' if low_inclusive else '>'} {low}" if low is not None else ""))
    return number


def finite_float_arg(name: str, low: float | None = None, high: float | None = None, **bounds):
    """An argparse `type=` that parses a float and applies `check_finite`: `--alpha nan` then exits with
    status 2 and a message naming the flag (an `ArgumentTypeError`, which argparse reports as a usage error)."""
    import argparse

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: {text!r} is not a number") from None
        try:
            return check_finite(name, value, low, high, **bounds)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = "finite float"
    return parse


def check_positive_int(name: str, value) -> int:
    """Return `value` when it is an int >= 1 (bools rejected); else raise `ValueError` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


__all__ = ["check_finite", "check_positive_int", "finite_float_arg"]
