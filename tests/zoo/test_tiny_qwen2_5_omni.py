"""Tiny Qwen2.5-Omni thinker: deterministic, real processor (image, video, audio features), generate offline."""

import torch

from mmaccel.zoo.tiny import build_tiny, sample_inputs
from mmaccel.zoo.tiny.qwen2_5_omni import MEL_BINS


def test_deterministic_and_generates_every_modality():
    model_a, processor = build_tiny("qwen2_5_omni_thinker", seed=2)
    model_b, _ = build_tiny("qwen2_5_omni_thinker", seed=2)
    assert type(processor).__name__ == "Qwen2_5OmniProcessor"
    for modality in ("image", "video", "audio"):
        inputs = sample_inputs("qwen2_5_omni_thinker", processor, batch_size=2, modality=modality)
        if modality == "audio":
            assert inputs["input_features"].shape[1] == MEL_BINS
        with torch.no_grad():
            assert torch.equal(model_a(**inputs).logits, model_b(**inputs).logits)
            out = model_a.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
        assert out.shape[1] == inputs["input_ids"].shape[1] + 3
