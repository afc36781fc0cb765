"""Peak tensor memory on CPU and byte counting of caches."""

import torch
from transformers import DynamicCache

from mmaccel.memory import TensorMemoryTracker, tensor_bytes, track_peak_memory

MIB = 2**20


def test_tracker_peak_is_the_largest_live_set_not_the_sum():
    with track_peak_memory("cpu") as mem:
        a = torch.zeros(MIB // 4)  # 1 MiB
        del a
        b = torch.ones(MIB // 2)  # 2 MiB
        c = b.view(-1, 2)  # a view adds nothing
        del b, c
    assert mem["peak_bytes"] == 2 * MIB


def test_tracker_counts_overlapping_tensors():
    tracker = TensorMemoryTracker()
    with tracker:
        a = torch.zeros(MIB // 4)
        b = torch.zeros(MIB // 4)
        a = a + b  # the new result lives while the old a is still referenced during the op
        del a, b
    assert tracker.peak_bytes == 3 * MIB
    assert tracker.current_bytes == 0


def test_tensor_bytes_of_a_cache_counts_each_storage_once():
    cache = DynamicCache()
    k = torch.zeros(1, 2, 5, 8)
    cache.update(k, k.clone(), layer_idx=0)
    cache.update(k.clone(), k.clone(), layer_idx=1)
    assert tensor_bytes(cache) == 4 * k.numel() * 4
    assert tensor_bytes([k, k, k.view(-1)]) == k.numel() * 4
