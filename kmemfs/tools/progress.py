"""Progress for long work (benchmarks, fuzz and stress runs).

    with progress(1000, "fuzzing") as p:
        for case in cases:
            ...
            p.advance()

On a terminal: a rich progress bar (on stderr). Otherwise (CI logs, pipes): plain lines
`fuzzing... 40% (400/1000)` every `step` percent, so logs stay short and greppable.
"""
import sys
from contextlib import contextmanager


class _Plain:
    def __init__(self, total, description, stream, step):
        self.total, self.description, self.stream, self.step = total, description, stream, step
        self.done, self._last = 0, -1

    def advance(self, n=1):
        self.update(self.done + n)

    def update(self, completed):
        self.done = completed
        pct = 100 * completed // self.total if self.total else 100
        bucket = pct // self.step
        if bucket != self._last:
            self._last = bucket
            print(f"{self.description}... {pct}% ({completed}/{self.total})",
                  file=self.stream, flush=True)


class _Rich:
    def __init__(self, bar, task):
        self.bar, self.task, self.done = bar, task, 0

    def advance(self, n=1):
        self.update(self.done + n)

    def update(self, completed):
        self.done = completed
        self.bar.update(self.task, completed=completed)


@contextmanager
def progress(total, description="working", stream=None, step=10, force_plain=False):
    """Yield an object with advance(n=1) and update(completed)."""
    stream = stream or sys.stderr
    if force_plain or not stream.isatty():
        p = _Plain(total, description, stream, step)
        p.update(0)
        yield p
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=Console(file=stream),
                  transient=False) as bar:
        yield _Rich(bar, bar.add_task(description, total=total))
