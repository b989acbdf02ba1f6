"""Ctrl-C and SIGTERM during training: finish the current step, save, stop with one line (issue 17).

:class:`StopRequests` turns SIGINT and SIGTERM into a flag that the training loop reads at each step
boundary, so the checkpoint it then writes is consistent (never half an optimiser step). A second Ctrl-C
while a stop is pending raises ``KeyboardInterrupt`` at once (the usual escape hatch). The loop ends by
raising :class:`TrainingInterrupted`, which ``gaussquant train`` turns into the one line
``interrupted at step N; rerun the same command to resume`` and the conventional exit status
(128 + signal number: 130 for SIGINT, 143 for SIGTERM).

Handlers are installed only in the main thread (``signal`` allows nothing else) and the previous ones are
restored on exit.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving what was due.

    Attributes:
        step: the last completed optimiser step.
        signum: the signal number (``signal.SIGINT`` or ``signal.SIGTERM``).
        exit_code: 128 + ``signum``.
    """

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = int(step), int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(f"interrupted at step {self.step}; rerun the same command to resume")


class StopRequests:
    """Context manager recording SIGINT / SIGTERM in :attr:`signum` instead of dying mid-step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, without the checkpoint
        self.signum = signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
