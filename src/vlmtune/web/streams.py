"""Several models answering one question at once, their texts streamed together as they grow.

Each column's ``reply`` is a blocking call that writes text pieces to a stream as the model
produces them and returns the final answer (``evaluation.chat.stream_reply``, composed by the
serve stage). Each runs in its own thread; the caller gets every column's text so far after each
piece. A column's lock keeps one generation at a time per model where the hardware cannot do
better (CPU): a second request waits, shown as such, instead of halving everyone's speed.
"""

from __future__ import annotations

import queue
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field

from vlmtune.config import EvalConfig
from vlmtune.errors import VlmtuneError

WAITING = "(waiting for this model: it answers one request at a time)"
# Generation that stalls this long without a token is reported instead of hanging the page.
STALL_SECONDS = 600


@dataclass
class Column:
    label: str
    reply: Callable  # (picture, question, EvalConfig, stream) -> final answer
    exclusive: bool = True  # one generation at a time on this model
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class _Pieces:
    """The text stream a reply writes to: every piece goes to the shared queue, tagged by column."""

    def __init__(self, index: int, out: queue.Queue):
        self.index, self.out = index, out

    def write(self, text: str) -> int:
        self.out.put((self.index, "piece", text))
        return len(text)

    def flush(self) -> None:
        pass


def _run(index: int, column: Column, picture, question: str, cfg: EvalConfig, out: queue.Queue) -> None:
    lock = column.lock if column.exclusive else nullcontext()
    if column.exclusive and column.lock.locked():
        out.put((index, "waiting", WAITING))
    try:
        with lock:
            out.put((index, "start", ""))
            answer = column.reply(picture, question, cfg, _Pieces(index, out))
        out.put((index, "done", answer))
    except VlmtuneError as err:
        out.put((index, "done", f"error: {err}"))
    except Exception as err:  # the page must keep serving: the trace goes to the server's log
        traceback.print_exc(file=sys.stderr)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        out.put((index, "done", f"error: generation failed ({type(err).__name__}: {first[:200]})"))


def side_by_side(columns: list[Column], picture, question: str, cfg: EvalConfig,
                 stall_seconds: float = STALL_SECONDS) -> Iterator[list[str]]:
    """Every column's text so far, after each change, until all have answered."""
    out: queue.Queue = queue.Queue()
    texts = [""] * len(columns)
    for i, column in enumerate(columns):
        threading.Thread(target=_run, args=(i, column, picture, question, cfg, out), daemon=True,
                         name=f"answer-{column.label}").start()
    pending = len(columns)
    while pending:
        try:
            index, kind, text = out.get(timeout=stall_seconds)
        except queue.Empty:
            yield [t or f"error: no output for {stall_seconds:.0f} s" for t in texts]
            return
        if kind == "piece":
            texts[index] += text
        else:  # waiting / start replace the text; done sets the final answer
            texts[index] = text
            pending -= kind == "done"
        yield list(texts)
