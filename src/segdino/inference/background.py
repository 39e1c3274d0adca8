"""Work beside the model: decoding ahead of it, scoring and writing behind it, in threads.

PIL's decoders, resizes and PNG encoders, NumPy's and SciPy's array loops and torch's
kernels release the GIL, so threads overlap the model (whose own threads leave cores idle
between operations) without copying images between processes. Results come back in the
order the items went in, whatever order the threads finish in, and a thread's error is
raised in the caller's thread as it was raised (a UserError stays its one-line message).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_background(fn: Callable[[T], R], items: Iterable[T], workers: int = 1,
                  ahead: int | None = None) -> Iterator[R]:
    """`fn(item)` for each of `items`, in `workers` threads, yielded in the items' order.

    At most `ahead` (default: twice `workers`) calls are pending at a time, so that a fast
    producer of items (the model) does not pile up results in memory. Once the caller stops
    (an error, or a `break`), the calls not yet started are dropped and the running ones
    waited for, so that no thread writes after the caller has moved on."""
    limit = ahead or 2 * workers
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                while len(pending) > limit:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def run_in_background(fn: Callable[[T], object], items: Iterable[T], workers: int = 1) -> None:
    """`fn(item)` for each of `items`, in `workers` threads, for its effects (files written);
    returns once all are done, raising the first error in the items' order."""
    for _ in in_background(fn, items, workers):
        pass
