"""A small training loop fed by ferry, on the CPU: the one-import migration in practice.

    PYTHONPATH=python python examples/train_cpu.py
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

import ferry  # was: from torch.utils.data import DataLoader


def main(epochs: int = 2, device: str = "cpu") -> float:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4096, 3, 16, 16), dtype=torch.uint8, generator=g)
    labels = (images[:, 0, 0, 0] >= 128).long()  # a rule the model can learn
    loader = ferry.DataLoader(
        TensorDataset(images, labels),
        batch_size=128,
        shuffle=True,
        num_workers=2,
        generator=g,
        device=device,  # the one new argument: batches arrive there
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 64), nn.ReLU(), nn.Linear(64, 2))
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = torch.tensor(0.0)
    for epoch in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x.float() / 255 - 0.5), y)
            loss.backward()
            opt.step()
        print(f"epoch {epoch}: loss {loss.item():.3f}; {loader.stats()}")
    return loss.item()


if __name__ == "__main__":
    main()
