"""ferry.DataLoader: torch's DataLoader, same constructor plus `device=`, faster inside."""

from __future__ import annotations

from typing import Any

import torch
import torch.utils.data
from torch.utils.data._utils.collate import default_collate, default_convert
from torch.utils.data.dataloader import _DatasetKind

from . import _ext, _native, _stats, _threads, _workers

__all__ = ["DataLoader"]

_T_co = torch.utils.data.dataloader._T_co


def _resolve_device(device: Any) -> torch.device | None:
    if device is None:
        return None
    dev = torch.device(device)
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"ferry.DataLoader: device must be 'cpu' or 'cuda[:N]', got {device!r}")
    if not torch.cuda.is_available():
        why = (
            "this torch was built without CUDA"
            if torch.version.cuda is None
            else "no CUDA device is visible"
        )
        raise RuntimeError(f"ferry.DataLoader(device={device!r}): CUDA is not available ({why})")
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise RuntimeError(
            f"ferry.DataLoader(device={device!r}): there are only "
            f"{torch.cuda.device_count()} CUDA devices"
        )
    return torch.device("cuda", index)


class DataLoader(torch.utils.data.DataLoader[_T_co]):
    """A drop-in :class:`torch.utils.data.DataLoader`: the same arguments, the same
    batches for an equal ``generator``, plus ``device``.

    Args:
        device: where batches arrive (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a
            :class:`torch.device`). ``None`` (the default) keeps torch's behaviour: CPU
            tensors. Asking for CUDA where there is none raises RuntimeError.
        worker_type: ``"process"`` (the default: worker processes, as torch) or
            ``"thread"``: worker threads in this process, for map-style datasets that
            release the GIL and for free-threaded Python (shared random generators, so
            torch's per-worker seeding is not reproduced; ``get_worker_info()`` is None).

    Every other argument means what it means for torch's DataLoader. Array-backed
    datasets (``TensorDataset``, :class:`ferry.ArrayDataset`, and ``Subset`` /
    ``ConcatDataset`` of them) with the default collation are gathered by C++ threads
    straight into reused staging buffers (``num_workers`` threads, or up to 4 when it is
    0). Other datasets with ``num_workers > 0`` run in worker processes that collate
    straight into shared-memory rings (or in threads, see ``worker_type``); with
    ``num_workers=0`` they run torch's own single-process iteration.
    """

    device: torch.device | None
    worker_type: str

    def __init__(
        self,
        dataset: torch.utils.data.Dataset[_T_co],
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: torch.utils.data.Sampler | Any | None = None,
        batch_sampler: torch.utils.data.Sampler[list] | Any | None = None,
        num_workers: int = 0,
        collate_fn: Any | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Any | None = None,
        multiprocessing_context: Any = None,
        generator: Any = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
        device: torch.device | str | None = None,
        worker_type: str = "process",
    ) -> None:
        _ext.load()  # a broken build fails here, loudly, not later in a fallback
        if worker_type not in ("process", "thread"):
            raise ValueError(f"worker_type must be 'process' or 'thread', got {worker_type!r}")
        self.device = _resolve_device(device)
        self.worker_type = worker_type
        super().__init__(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            batch_sampler=batch_sampler,
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            drop_last=drop_last,
            timeout=timeout,
            worker_init_fn=worker_init_fn,
            multiprocessing_context=multiprocessing_context,
            generator=generator,
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent_workers,
            pin_memory_device=pin_memory_device,
            in_order=in_order,
        )

    def _native_plan(self) -> _native.NativePlan | None:
        default = default_collate if self._auto_collation else default_convert
        if (
            self._dataset_kind != _DatasetKind.Map
            or self.collate_fn is not default
            or (self.num_workers == 0 and self.timeout != 0)  # torch rejects this: let it
            # worker_init_fn runs in torch's worker processes, and its effects and errors
            # are the user's to see: the native path has no worker processes.
            or (self.num_workers > 0 and self.worker_init_fn is not None)
        ):
            return None
        return _native.build_plan(self.dataset)

    def stats(self) -> _stats.LoaderStats:
        """How the latest iterator of this loader did over its last 100 batches: the
        consumer's wait for data and its own time between batches, the producer's time
        per batch, batches/s and the data-starvation ratio. Cheap: always on.

            for step, (x, y) in enumerate(loader):
                ...
                if step % 100 == 0:
                    print(loader.stats())   # starvation near 1: the loop is data-bound
        """
        recorder = getattr(self, "_stats_recorder", None)
        if recorder is None:
            return _stats.StatsRecorder("none").snapshot()
        return recorder.snapshot()

    def __repr__(self) -> str:
        recorder = getattr(self, "_stats_recorder", None)
        stats = f", {recorder.snapshot()}" if recorder is not None else ""
        return (
            f"ferry.DataLoader({type(self.dataset).__name__}, batch_size={self.batch_size}, "
            f"num_workers={self.num_workers}, device={self.device}{stats})"
        )

    def _get_iterator(self) -> Any:
        iterator = self._make_iterator()
        self._stats_recorder = _stats.StatsRecorder(getattr(iterator, "path", "torch"))
        return _stats.MeasuredIter(iterator, self._stats_recorder)

    def _make_iterator(self) -> Any:
        plan = self._native_plan()
        if plan is not None:
            return _native.NativeIter(self, plan, self.device)
        if self.num_workers > 0 and self.worker_type == "thread":
            iterator = _threads.ThreadIter(self)
        elif self.num_workers > 0:
            self.check_worker_number_rationality()
            iterator = _workers.WorkerIter(self)
        else:
            iterator = super()._get_iterator()
        if self.device is not None and self.device.type != "cpu":
            return _DeviceIter(iterator, self.device)
        return iterator


class _DeviceIter:
    """Another iterator (torch's own, worker processes or threads), with each batch copied
    to `device` as it is handed over."""

    def __init__(self, inner: Any, device: torch.device) -> None:
        self._inner = inner
        self._device = device

    def __iter__(self) -> _DeviceIter:
        return self

    def __next__(self) -> Any:
        return _native.move_to_device(next(self._inner), self._device)

    def __len__(self) -> int:
        return len(self._inner)

    def _reset(self, loader: Any, first_iter: bool = False) -> None:
        self._inner._reset(loader, first_iter)

    def __getattr__(self, name: str) -> Any:  # path, last_produce_s, ... of the inner one
        return getattr(self._inner, name)
