"""torch's user-visible sentences kept verbatim where ferry adds detail (a worker's
death, a timeout, a failing sample), each compared with torch's own text computed here,
and the sample of a batch that raised named."""

from __future__ import annotations

import os
import re
import signal

import pytest
import torch
from torch.utils.data import Dataset

import ferry


class Dies(Dataset):
    def __init__(self, how: str) -> None:
        self.how = how

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> int:
        if i == 5:
            if self.how == "exit":
                os._exit(3)
            if self.how == "exit0":
                os._exit(0)
            os.kill(os.getpid(), {"segv": signal.SIGSEGV, "kill": signal.SIGKILL}[self.how])
        return i


class Raises(Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> int:
        if i == 13:
            raise ValueError("sample 13 is bad")
        return i


def failure(loader_cls, dataset, **kwargs) -> BaseException:
    with pytest.raises(Exception) as info:
        list(loader_cls(dataset, batch_size=4, **kwargs))
    return info.value


def texts(exc: BaseException) -> list[str]:
    """The exception's message and its causes', pids made alike."""
    out = []
    while exc is not None:
        out.append(re.sub(r"pid(\(s\))? \d+", lambda m: f"pid{m.group(1) or ''} N", str(exc)))
        exc = exc.__cause__
    return out


@pytest.mark.parametrize("how", ["exit", "exit0", "segv", "kill"])
def test_a_dead_worker_is_reported_in_torchs_words(how):
    theirs = texts(failure(torch.utils.data.DataLoader, Dies(how), num_workers=2))
    ours = texts(failure(ferry.DataLoader, Dies(how), num_workers=2))
    # torch raises "exited unexpectedly" from its SIGCHLD handler's sentence (or, by a
    # race, that sentence alone): the most telling of them is in ferry's message
    specific = next((t for t in theirs if "exit code" in t or "killed by signal" in t),
                    theirs[0])
    assert specific in ours[0], (theirs, ours)
    assert re.search(r"worker \d+ \(pid N\)", ours[0]), ours  # ferry's detail: which worker


def test_a_timeout_is_reported_in_torchs_words():
    class Slow(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            import time
            time.sleep(2)
            return i

    theirs = failure(torch.utils.data.DataLoader, Slow(), num_workers=1, timeout=0.3)
    ours = failure(ferry.DataLoader, Slow(), num_workers=1, timeout=0.3)
    assert str(theirs) and str(ours).startswith(str(theirs)), (str(theirs), str(ours))


@pytest.mark.parametrize("kwargs", [dict(num_workers=2),
                                    dict(num_workers=2, worker_type="thread")])
def test_the_sample_that_raised_is_named(kwargs):
    theirs = failure(torch.utils.data.DataLoader, Raises(), num_workers=kwargs["num_workers"])
    ours = failure(ferry.DataLoader, Raises(), **kwargs)
    assert type(ours) is type(theirs)
    text = str(ours) + "".join(getattr(ours, "__notes__", []))
    assert "sample index 13 raised" in text, text
    # torch's first sentence ("Caught ValueError in DataLoader worker process N.") intact
    first = re.sub(r"process \d", "process N", str(theirs).splitlines()[0])
    assert first in re.sub(r"process \d", "process N", str(ours)) or (
        kwargs.get("worker_type") == "thread" and str(ours) == "sample 13 is bad")
