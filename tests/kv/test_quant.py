"""Packed KV quantization: exact packing, and quantize→dequantize error within the stated bounds."""

import pytest
import torch

from mmaccel.kv.quant import (
    dequantize_keys,
    dequantize_values,
    pack,
    quantize_keys,
    quantize_values,
    unpack,
)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_pack_round_trips_and_really_shrinks(bits):
    codes = torch.randint(0, 2**bits, (3, 5, 16), dtype=torch.uint8)
    packed = pack(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 5, 16 * bits // 8)
    assert torch.equal(unpack(packed, bits), codes)


def test_bad_bits_and_dims_are_named():
    with pytest.raises(ValueError, match="bits=3 is not supported; allowed: 2, 4, 8"):
        pack(torch.zeros(4, 8, dtype=torch.uint8), 3)
    with pytest.raises(ValueError, match="multiple of 4"):
        pack(torch.zeros(4, 6, dtype=torch.uint8), 2)


def _keys_with_an_outlier_channel():
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(2, 4, 32, 16, generator=gen)
    keys[..., 3] *= 20  # keys have outlier channels
    return keys


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_key_error_is_at_most_half_a_step_per_channel(bits):
    keys = _keys_with_an_outlier_channel()
    block = quantize_keys(keys, bits)
    error = (dequantize_keys(block) - keys).abs()
    # half a step, plus float16 rounding of the statistics (relative 2^-11 of the channel's magnitude)
    bound = block.step.float() / 2 + keys.abs().amax(-2, keepdim=True) * 2**-10
    assert (error <= bound).all()
    # per-channel statistics: the outlier channel does not spoil the others
    assert error[..., :3].max() < error[..., 3].max()


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_value_error_is_at_most_half_a_token_step(bits):
    gen = torch.Generator().manual_seed(1)
    values = torch.randn(2, 4, 32, 16, generator=gen) * torch.linspace(0.1, 5, 16)
    block = quantize_values(values, bits)
    error = (dequantize_values(block) - values).abs()
    bound = (block.step.float() / 2) * block.channel.float() + values.abs().amax(-2, keepdim=True) * 2**-9
    assert (error <= bound).all()


def test_blocks_shrink_for_real_at_a_real_head_size():
    keys, values = torch.randn(1, 2, 128, 128), torch.randn(1, 2, 128, 128)  # 128 tokens, head_dim 128
    fp16_bytes = 2 * keys.numel() * 2
    four_bit = quantize_keys(keys, 4).nbytes() + quantize_values(values, 4).nbytes()
    two_bit = quantize_keys(keys, 2).nbytes() + quantize_values(values, 2).nbytes()
    assert fp16_bytes / four_bit > 3.6  # 4 bits + statistics
    assert fp16_bytes / two_bit > 6.5
