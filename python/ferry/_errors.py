"""torch's user-visible texts, kept verbatim where ferry adds detail, and which sample of
a batch raised.

Code and tests in the wild match torch's sentences (PyTorch's own test_segfault looks
for "DataLoader worker (pid N) is killed by signal: "), so ferry's messages carry them
intact, with ferry's detail after them.
"""

from __future__ import annotations

import signal
import sys
from types import TracebackType
from typing import Any

from ._torch_compat import ExceptionWrapper


def timed_out(seconds: float) -> str:
    """torch's sentence for a batch that did not come within the loader's timeout."""
    return f"DataLoader timed out after {seconds} seconds"


def worker_death(wid: int, pid: int | None, exitcode: int | None) -> str:
    """The message for a worker that died: torch's two sentences for it (torch raises
    "exited unexpectedly" from the one its SIGCHLD handler says, when that handler is
    first to see the death), then ferry's detail (which worker, how it ended)."""
    summary = f"DataLoader worker (pid(s) {pid}) exited unexpectedly"
    if exitcode is not None and exitcode < 0:
        signum = -exitcode
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        cause = (f"DataLoader worker (pid {pid}) is killed by signal: "
                 f"{signal.strsignal(signum) or name}. ")
        if signum == signal.SIGBUS:
            cause += ("It is possible that dataloader's workers are out of shared memory. "
                      "Please try to raise your shared memory limit.")
        how = f"killed by {name} (signal {signum})"
    elif exitcode:
        cause = (f"DataLoader worker (pid {pid}) exited unexpectedly with exit code "
                 f"{exitcode}. Details are lost due to multiprocessing. Rerunning with "
                 "num_workers=0 may give better error trace.")
        how = f"exit code {exitcode}"
    else:
        cause, how = None, f"exit code {exitcode}"
    detail = f" [ferry: worker {wid} (pid {pid}), {how}]"
    return (f"{summary}: {cause}" if cause else summary) + detail


def failing_sample(tb: TracebackType | None) -> Any:
    """The index whose ``dataset[idx]`` raised, read from the traceback of torch's
    map-style fetcher (it fetches a batch one index at a time), or None (the error came
    from elsewhere: ``__getitems__``, the collate_fn, a sampler)."""
    found = None
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_filename.endswith(("_utils/fetch.py", "_utils\\fetch.py")) and (
            "idx" in frame.f_locals
        ):
            found = frame.f_locals["idx"]
        tb = tb.tb_next
    return found


def which_sample(exc: BaseException) -> str:
    """" (sample index I raised)" where the traceback tells, else ""."""
    idx = failing_sample(exc.__traceback__)
    return "" if idx is None else f" (sample index {idx!r} raised)"


class SampleExceptionWrapper(ExceptionWrapper):
    """torch's ExceptionWrapper, made in a ferry worker process, which also records the
    index whose ``dataset[idx]`` raised (`sample`, None where it cannot tell): the
    traceback it reads is gone once the error crosses to the main process as text."""

    def __init__(self, exc_info: Any = None, where: str = "in background") -> None:
        if exc_info is None:
            exc_info = sys.exc_info()
        super().__init__(exc_info, where)
        self.sample = failing_sample(exc_info[2])
