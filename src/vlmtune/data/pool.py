"""Per-file work in a bounded process pool with a progress bar; results come back in input order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vlmtune.errors import VlmtuneError

T = TypeVar("T")
R = TypeVar("R")
DEFAULT_WORKERS = 2  # training usually shares the machine; decoding more in parallel buys little


def _progress(label: str, enabled: bool) -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )


def map_files(
    fn: Callable[[T], R], items: Sequence[T], workers: int = DEFAULT_WORKERS, label: str = "", progress: bool = True
) -> list[R]:
    """``[fn(i) for i in items]`` over ``workers`` processes; one worker runs in this process."""
    with _progress(label, progress and len(items) > 0) as bar:
        task = bar.add_task(label, total=len(items))
        if workers <= 1 or len(items) <= 1:
            results = []
            for item in items:
                results.append(fn(item))
                bar.advance(task)
            return results
        return _in_pool(fn, items, min(workers, len(items)), lambda: bar.advance(task))


def _in_pool(fn, items, workers, advance) -> list:
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(fn, item) for item in items]
        for _ in as_completed(futures):
            advance()
        return [f.result() for f in futures]
    except BrokenProcessPool:
        raise VlmtuneError(
            "a worker process died (out of memory?); rerun with --workers 1 or a lower --max-pixels"
        ) from None
    finally:
        # On Ctrl-C, do not wait for thousands of queued files.
        pool.shutdown(wait=True, cancel_futures=True)
