"""Reading and writing beside deciding: one thread reads (and validates) the next chunk, one
writes the previous chunk's decisions, while the caller decides the current one.

Parquet/CSV decoding and encoding and most of the pipeline's NumPy work run without the GIL,
so on a second core the stages overlap. Order is kept (one thread per stage); memory stays
bounded (one chunk read ahead, one write in flight); an error surfaces in the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """`items`, the next one produced in a background thread while the caller uses this one."""
    with ThreadPoolExecutor(1, thread_name_prefix="batch-read") as pool:
        pending = pool.submit(next, items, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, items, _END)
            yield item  # type: ignore[misc]


class WriteBehind:
    """Calls run in submission order on one background thread, at most one waiting."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="batch-write")
        self._last: Future[Any] | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.wait()  # the previous write: bounded memory, and its error raised here
        self._last = self._pool.submit(fn, *args)

    def wait(self) -> None:
        if self._last is not None:
            last, self._last = self._last, None
            last.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
