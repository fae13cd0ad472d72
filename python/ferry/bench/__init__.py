"""ferry's benchmarks against torch.utils.data.DataLoader, side by side in one run.

    python -m ferry.bench [--quick] [--json PATH] [--plot PATH.png] [--workloads ...]
    python -m ferry.bench --workloads H2D,TRAIN        # on a machine with a CUDA device
    python -m ferry.bench --dataset mymodule:make_dataset [--batch-size 64 --num-workers 2]

`native` holds the array workloads (W1 in memory, W3 on-disk memmap), `workers` the
Python-dataset ones (W2, W2-dict, time to first batch, held batches), `gpu` the ones on a
CUDA device (H2D: batches delivered on the device against a pinned-copy ceiling; TRAIN: a
small training loop's data stall), reported as skipped without one. Every figure is a
ratio against torch measured in the same process; the machine and versions are printed
beside them. While a workload runs, a progress line on stderr names it, the config being
measured and its pass (step k of n).
"""
