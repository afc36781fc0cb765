"""Tiny VideoLLaMA3: deterministic, real processor, generate offline for both modalities."""

import torch

from mmaccel.zoo.tiny import build_tiny, sample_inputs


def test_deterministic_and_generates():
    model_a, processor = build_tiny("video_llama_3", seed=1)
    model_b, _ = build_tiny("video_llama_3", seed=1)
    assert type(processor).__name__ == "VideoLlama3Processor"
    for modality in ("image", "video"):
        inputs = sample_inputs("video_llama_3", processor, batch_size=2, modality=modality)
        with torch.no_grad():
            assert torch.equal(model_a(**inputs).logits, model_b(**inputs).logits)
            out = model_a.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
        assert out.shape[1] == inputs["input_ids"].shape[1] + 3
