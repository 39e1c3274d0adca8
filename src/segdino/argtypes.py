"""Argument types that check a flag's value when it is parsed.

argparse calls a type with the flag's text; a `ValueError` there becomes "argument --lr:
invalid ... value" with the flag named, before any work starts. Each factory returns such a
type with a readable name, so the message says what was expected.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path


def _typed(convert: Callable[[str], float | int], ok: Callable[[float], bool], expected: str
           ) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
        return value

    parse.__name__ = expected
    return parse


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer >= `low`."""
    return _typed(int, lambda v: v >= low, f"an integer >= {low}")


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An integer in [low, high]."""
    return _typed(int, lambda v: low <= v <= high, f"an integer from {low} to {high}")


def positive_float(text: str) -> float:
    """A finite number > 0 (a learning rate, a pixel spacing)."""
    return _POSITIVE(text)


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a weight decay)."""
    return _NON_NEGATIVE(text)


def open_unit_float(text: str) -> float:
    """A number strictly between 0 and 1 (a threshold)."""
    return _OPEN_UNIT(text)


def int_multiple_of(step: int) -> Callable[[str], int]:
    """A positive integer multiple of `step` (an input size, in whole patches)."""
    return _typed(int, lambda v: v > 0 and v % step == 0, f"a positive multiple of {step}")


def fraction_below_one(text: str) -> float:
    """A number from 0 to below 1 (a share held out: something must be left)."""
    return _BELOW_ONE(text)


def unit_float(text: str) -> float:
    """A number from 0 to 1, ends included (a fraction)."""
    return _UNIT(text)


def share_float(text: str) -> float:
    """A number from 0 up to, not including, 1 (a share held out: 1 would leave nothing)."""
    return _SHARE(text)


def existing_dir(text: str) -> str:
    """The path of an existing folder."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return text


_POSITIVE = _typed(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
_NON_NEGATIVE = _typed(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
_OPEN_UNIT = _typed(float, lambda v: 0 < v < 1, "a number between 0 and 1 (exclusive)")
_BELOW_ONE = _typed(float, lambda v: 0 <= v < 1, "a number from 0 to below 1")
_UNIT = _typed(float, lambda v: 0 <= v <= 1, "a number from 0 to 1")
_SHARE = _typed(float, lambda v: 0 <= v < 1, "a number from 0 up to (not including) 1")
