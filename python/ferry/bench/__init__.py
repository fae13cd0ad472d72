"""ferry's benchmarks: ferry.DataLoader against torch.utils.data.DataLoader, side by side
in one process. Every figure is a ratio against a baseline measured in the same run
(torch, or a plain copy of the same bytes); the machine and versions are printed beside
them. Configs are interleaved (torch, ferry, torch, ferry, ...), each after one excluded
warm-up pass; a row is the median of its runs. Nothing is asserted: goals are printed
next to the figures. While a workload runs, a progress line on stderr names it, the
config being measured and its pass (step k of n).

    python -m ferry.bench [--quick] [--json PATH] [--plot PATH.png] [--workloads W1,W2]
    python -m ferry.bench --workloads H2D,TRAIN        # on a machine with a CUDA device
    python -m ferry.bench --dataset mymodule:make_dataset [--batch-size 64]
        [--num-workers 2] [--pin-memory] [--seed 0]  # your dataset: make_dataset() returns it

The workloads (listed below with --help): `native` W1 (in memory) and W3 (on-disk
memmap), ferry's native gather; `workers` W2, W2-dict, TTFB and HELD, ferry's worker
processes on Python datasets; `images` W4 (ImageNet-like JPEGs, RandomResizedCrop) and W5
(28x28 grayscale PNGs), ferry.vision's C++ pipeline against the tutorial's PIL dataset;
`gpu` H2D and TRAIN on a CUDA device, reported as skipped without one. `common` is the
framework they share: runs, rows, measure(), the tables, summaries, notes, JSON, plot and
command line.

Adding a workload (W6, say) is one module, ferry/bench/<topic>.py:
  1. its datasets at module level (spawned workers import them);
  2. `run_w6(settings, progress) -> Result`: make torch's and ferry's loaders with
     `loader_kwargs(settings, num_workers)` (equal generators) and wrap each maker in
     `loader_config(name, kind, make, settings.warmup_batches)` (kind "torch", "ferry",
     "ceiling" or "reference"); time them with `measure(configs, settings.repeats,
     progress)`; return `Result("W6", title, rows, notes, columns)` (columns THROUGHPUT,
     or WITH_CEILING where a "ceiling" row is measured), after `res.summarize(line,
     **figures)` for each goal;
  3. `WORKLOADS = (Workload("W6", "one line for --help", run_w6),)`, with
     `cannot_run=` where it needs what a machine may lack (a CUDA device, a codec),
     `repeats=runs(default, quick)` and `options=` for its own command-line options;
  4. `*topic.WORKLOADS` added to WORKLOADS in ferry/bench/__main__.py (CUDA ones last).
"""
