"""`in_background`: results in the items' order, a thread's error raised as it was, and no
work started far beyond the caller."""

from __future__ import annotations

import threading
import time

import pytest

from segdino.errors import UserError
from segdino.inference.background import in_background, run_in_background


def test_results_in_the_items_order() -> None:
    # the early items sleep longest, so the threads finish in the opposite order
    results = list(in_background(lambda k: (time.sleep(0.02 * (5 - k)), k * k)[1], range(6),
                                 workers=3))
    assert results == [0, 1, 4, 9, 16, 25]


def test_the_first_error_in_order_is_raised_and_later_items_are_not_started() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(k: int) -> int:
        with lock:
            started.append(k)
        if k in (3, 4):
            raise UserError(f"item {k}: cannot write")
        return k

    items = iter(range(100))
    with pytest.raises(UserError) as raised:
        run_in_background(work, items, workers=2)
    assert str(raised.value) == "item 3: cannot write"  # 4's error comes later in order
    assert max(started) <= 3 + 2 * 2 + 1  # at most `ahead` beyond the failed one
    assert next(items) <= 3 + 2 * 2 + 2  # the caller's items were not drained
