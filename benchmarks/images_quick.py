#!/usr/bin/env python3
"""A quick side-by-side of the image path until W4 joins python -m ferry.bench: an
ImageNet-like folder made from scikit-image photos (~500 px, JPEG q75-95),
RandomResizedCrop(224) + flip + ToTensor + Normalize, bs 16; torch over the tutorial PIL
dataset (nw 0/1/2) against ferry over ferry.vision.ImageFolder (nw 0/2), one run, ratios
to the best torch row.   PYTHONPATH=python python3 benchmarks/images_quick.py"""
import os
import sys
import tempfile
import time

sys.path[:0] = [os.path.join(os.path.dirname(__file__), "..", d) for d in ("python", "tests")]
import torch

import ferry
from torch.utils.data import DataLoader as TL
from ferry.vision import ImageFolder, transforms as T
from vision_reference import write_image_folder
root = tempfile.mkdtemp(); write_image_folder(root, per_class=13)
tf = lambda: T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize([0.485,0.456,0.406],[0.229,0.224,0.225])])
ds = ImageFolder(root, transform=tf())
from PIL import Image
class PilDs(torch.utils.data.Dataset):  # the PyTorch-tutorial way: PIL decode + the same transforms on PIL
    def __init__(s, samples): s.samples = samples; s.t = tf()
    def __len__(s): return len(s.samples)
    def __getitem__(s, i):
        p, y = s.samples[i]
        with open(p, "rb") as f: img = Image.open(f).convert("RGB")
        return s.t(img), y
pil = PilDs(ds.samples)
def rate(cls, d, nw, epochs=3):
    L = cls(d, batch_size=16, shuffle=True, num_workers=nw)
    for _ in L: pass
    t = time.perf_counter(); n = 0
    for _ in range(epochs):
        for x, y in L: n += len(y)
    return n / (time.perf_counter() - t), getattr(iter(L), "path", "torch")
print(f"{len(ds)} images, torch {torch.__version__}, {os.cpu_count()} cpus")
res = {}
for nw in (0, 1, 2):
    res[f"torch nw={nw} (PIL dataset)"] = rate(TL, pil, nw)[0]
for nw in (0, 2):
    r, path = rate(ferry.DataLoader, ds, nw)
    res[f"ferry nw={nw} ({path})"] = r
best = max(v for k, v in res.items() if k.startswith("torch"))
for k, v in res.items(): print(f"{k:32s} {v:8.1f} img/s  {v/best:.2f}x best torch")
