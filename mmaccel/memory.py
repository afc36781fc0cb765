"""Peak memory of a block of code: CUDA allocator statistics on GPU, live tensor bytes on CPU.

PyTorch keeps no allocation statistics for CPU tensors, so on CPU :class:`TensorMemoryTracker` watches every
tensor that an operator returns (a ``TorchDispatchMode``) and counts the bytes of the distinct storages alive at
each moment. Tensors that existed before the block (the weights) are not counted: the figure is the peak of the
memory the block itself allocated, which is what acceleration changes (activations and KV cache).
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class TensorMemoryTracker(TorchDispatchMode):
    """Counts bytes of live tensor storages created while the mode is active; ``peak_bytes`` is their maximum."""

    def __init__(self) -> None:
        super().__init__()
        self.current_bytes = 0
        self.peak_bytes = 0
        self._refs: dict[tuple[str, int], int] = {}
        self._sizes: dict[tuple[str, int], int] = {}

    def _release(self, key: tuple[str, int]) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.current_bytes -= self._sizes.pop(key)

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = (str(tensor.device), storage.data_ptr())
        if key not in self._refs:
            self._refs[key] = 0
            self._sizes[key] = storage.nbytes()
            self.current_bytes += storage.nbytes()
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        self._refs[key] += 1
        weakref.finalize(tensor, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105 - dispatch protocol
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor) and item.device.type != "meta" and item.untyped_storage().nbytes():
                self._track(item)
        return out


@contextmanager
def track_peak_memory(device: torch.device | str) -> Any:
    """Context manager yielding a dict whose ``"peak_bytes"`` is set on exit.

    On CUDA: the allocator's peak allocated bytes during the block minus those allocated before it. Elsewhere: the
    peak of live tensor bytes created in the block (:class:`TensorMemoryTracker`), which slows the block down, so
    time a separate run.
    """
    device = torch.device(device)
    result: dict[str, int] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result["peak_bytes"] = torch.cuda.max_memory_allocated(device) - before
    else:
        tracker = TensorMemoryTracker()
        with tracker:
            yield result
        result["peak_bytes"] = tracker.peak_bytes


def tensor_bytes(obj: Any) -> int:
    """Bytes of the distinct tensor storages reachable from ``obj``'s attributes (a cache, a cache layer, a list)."""
    seen: set[tuple[str, int]] = set()
    total = 0
    stack = [obj]
    visited: set[int] = set()
    while stack:
        item = stack.pop()
        if id(item) in visited:
            continue
        visited.add(id(item))
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            key = (str(item.device), storage.data_ptr())
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif hasattr(item, "__dict__") and not isinstance(item, (torch.nn.Module, type)):
            stack.extend(vars(item).values())
    return total
