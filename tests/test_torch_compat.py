"""torch's private surface passes through one module, ferry/_torch_compat.py: no other
ferry module imports from a private torch module, imports a private name of torch, or
reaches one through an attribute chain (``torch.utils.data._utils...``); the private
attributes of torch's loader and iterators that ferry uses are listed there, and exist."""

from __future__ import annotations

import ast
from pathlib import Path

import ferry
from ferry import _torch_compat

PACKAGE = Path(ferry.__file__).parent
COMPAT = PACKAGE / "_torch_compat.py"


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def private_torch_uses(source: str) -> list[str]:
    """Where `source` names a private module or name of torch, as 'line: what'."""
    found = []
    tree = ast.parse(source)
    # an attribute chain is reported once, at its outermost node
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module.split(".")[0] == "torch"):
            parts = node.module.split(".")
            names = [a.name for a in node.names]
            if any(map(_private, parts)) or any(map(_private, names)):
                found.append(f"{node.lineno}: from {node.module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "torch" and any(map(_private, parts)):
                    found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.Attribute) and id(node) not in inner:
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id == "torch":
                chain.reverse()
                if any(map(_private, chain)):
                    found.append(f"{node.lineno}: torch.{'.'.join(chain)}")
    return found


def test_the_scanner_finds_each_kind_of_use():
    source = (
        "from torch.utils.data._utils.fetch import _MapDatasetFetcher\n"
        "from torch.utils.data.dataloader import _DatasetKind\n"
        "import torch.utils.data._utils.worker\n"
        "x = torch.utils.data._utils.pin_memory\n"
        "from torch.utils.data import default_collate\n"
        "y = torch.__version__\n"
    )
    assert [u.split(":")[0] for u in private_torch_uses(source)] == ["1", "2", "3", "4"]


def test_only_torch_compat_uses_torchs_private_names():
    offenders = {
        str(path.relative_to(PACKAGE)): uses
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != COMPAT and (uses := private_torch_uses(path.read_text()))
    }
    assert not offenders, f"import these through ferry/_torch_compat.py: {offenders}"


def test_every_name_torch_compat_offers_is_used():
    offered = {n for n in vars(_torch_compat)
               if not n.startswith("__") and n != "annotations"}
    used: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path == COMPAT:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in ("_torch_compat",
                                                                    "ferry._torch_compat"):
                used.update(a.name for a in node.names)
    # _utils serves the two functions below it; TORCH_ATTRIBUTES is a list for the test
    unused = offered - used - {"_utils", "TORCH_ATTRIBUTES"}
    assert not unused, f"names in _torch_compat that no module uses: {sorted(unused)}"


def torchs_private_attributes() -> set[str]:
    """The private attributes and methods of torch's DataLoader and its iterators, as the
    installed torch has them (classes, and instances of a loader and both iterators)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data import dataloader as torch_dataloader

    found: set[str] = set()
    for cls in (DataLoader, torch_dataloader._SingleProcessDataLoaderIter,
                torch_dataloader._MultiProcessingDataLoaderIter):
        for c in cls.__mro__:
            if c.__module__.startswith("torch"):
                found.update(vars(c))
    loader = DataLoader(TensorDataset(torch.arange(4)), batch_size=2, num_workers=1)
    found.update(vars(loader), vars(iter(DataLoader(loader.dataset))))
    it = iter(loader)
    found.update(vars(it))
    del it
    return {n for n in found if _private(n)}


def ferrys_uses_of(names: set[str]) -> dict[str, list[str]]:
    """name -> where ferry (outside _torch_compat) reads, sets, defines or asks for it."""
    uses: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == COMPAT:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = None
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.FunctionDef):
                name = node.name
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) > 1
                  and isinstance(node.args[1], ast.Constant)):
                name = node.args[1].value
            if name in names:
                uses.setdefault(name, []).append(f"{path.name}:{node.lineno}")
    return uses


def test_torchs_private_attributes_ferry_uses_are_listed_and_exist():
    torchs = torchs_private_attributes()
    listed = set(_torch_compat.TORCH_ATTRIBUTES)
    gone = listed - torchs
    assert not gone, f"torch no longer has these (adapt ferry's use of them): {sorted(gone)}"
    uses = ferrys_uses_of(torchs)
    unlisted = {n: w for n, w in uses.items() if n not in listed}
    assert not unlisted, f"list these in _torch_compat.TORCH_ATTRIBUTES, with why: {unlisted}"
    stale = listed - set(uses)
    assert not stale, f"listed in TORCH_ATTRIBUTES but no longer used: {sorted(stale)}"
