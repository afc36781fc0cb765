"""accelerate()/restore() on every family's tiny model: bit-identical restore, no stacking, the user's generate
habits (greedy, sampling, streamer, left-padded batch 2) unchanged, clear errors for unsupported models."""

import importlib
import threading

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, TextIteratorStreamer

import mmaccel
from mmaccel.adapters import UnsupportedModelError, supported_model_types
from mmaccel.attention import ATTENTION_NAME, BACKEND_ATTR
from mmaccel.zoo.tiny import family_modalities, sample_inputs, tiny_families

kernels_attention = importlib.import_module("mmaccel.kernels.attention")

FAMILIES = tiny_families()


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _greedy(model, inputs, n=6):
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[:, inputs["input_ids"].shape[1]:]


@pytest.mark.parametrize("family", FAMILIES)
def test_restore_is_bit_identical(tiny, family):
    model, processor = tiny(family)
    inputs = sample_inputs(family, processor, batch_size=2, seed=1)
    before = _logits(model, inputs)
    original = model.config.get_text_config()._attn_implementation
    try:
        mmaccel.accelerate(model, kernels="torch")
        assert model.config.get_text_config()._attn_implementation == ATTENTION_NAME
        patched = _logits(model, inputs)
    finally:
        mmaccel.restore(model)
    after = _logits(model, inputs)
    assert torch.equal(before, after)
    assert model.config.get_text_config()._attn_implementation == original
    assert not mmaccel.is_accelerated(model)
    assert not any(BACKEND_ATTR in m.__dict__ for m in model.modules())
    # The patched model really ran a different code path, yet computes the same function.
    mask = inputs["attention_mask"].bool()
    torch.testing.assert_close(patched[mask], before[mask], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family,modality", [(f, m) for f in FAMILIES for m in family_modalities(f)])
def test_greedy_left_padded_batch2_matches_unpatched(tiny, family, modality):
    model, processor = tiny(family)
    inputs = sample_inputs(family, processor, batch_size=2, modality=modality, seed=2)
    assert (inputs["attention_mask"] == 0).any(), "the sample batch must really be left padded"
    expected = _greedy(model, inputs)
    try:
        mmaccel.accelerate(model, kernels="torch")
        got = _greedy(model, inputs)
    finally:
        mmaccel.restore(model)
    assert torch.equal(got, expected)


def test_triton_kernel_through_generate_under_interpreter():
    """On CPU the kernel runs under TRITON_INTERPRET=1 (tests/conftest.py); on a GPU machine it is compiled."""
    from mmaccel.zoo.tiny import build_tiny

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor = build_tiny("llava")
    model.to(device)
    inputs = sample_inputs("llava", processor, batch_size=2, seed=3).to(device)
    expected = _greedy(model, inputs, n=3)
    try:
        mmaccel.accelerate(model, kernels="triton")
        assert all(m.__dict__[BACKEND_ATTR] == "triton" for m in mmaccel.patch.get_state(model).adapter
                   .attention_modules)
        got = _greedy(model, inputs, n=3)
    finally:
        mmaccel.restore(model)
    assert torch.equal(got, expected)


def test_accelerate_twice_reconfigures_without_stacking(tiny):
    model, processor = tiny("llava")
    inputs = sample_inputs("llava", processor, seed=4)
    before = _logits(model, inputs)
    try:
        assert mmaccel.accelerate(model, kernels="torch") is model
        mmaccel.accelerate(model, "kernels")
        assert mmaccel.get_config(model).kernels.backend == "auto"
        state = mmaccel.patch.get_state(model)
        assert [c.name for c in state.components] == ["kernels"]
        mmaccel.accelerate(model, "none")
        assert model.config.get_text_config()._attn_implementation != ATTENTION_NAME
    finally:
        mmaccel.restore(model)
    mmaccel.restore(model)  # a second restore is a no-op
    assert torch.equal(_logits(model, inputs), before)


def test_sampling_and_streamer_work_after_accelerate(tiny):
    model, processor = tiny("llava")
    inputs = sample_inputs("llava", processor, seed=5)
    torch.manual_seed(0)
    with torch.no_grad():
        expected = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=True, top_k=20)
    try:
        mmaccel.accelerate(model, kernels="torch")
        torch.manual_seed(0)
        with torch.no_grad():
            sampled = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=True, top_k=20)
        streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True)
        kwargs = dict(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False, streamer=streamer)
        thread = threading.Thread(target=model.generate, kwargs=kwargs)
        thread.start()
        streamed = "".join(streamer)
        thread.join()
        greedy = _greedy(model, inputs, n=5)
    finally:
        mmaccel.restore(model)
    assert torch.equal(sampled, expected)
    assert streamed == processor.tokenizer.decode(greedy[0], skip_special_tokens=True)


def test_unsupported_model_names_type_and_lists_supported():
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    model = LlamaForCausalLM(config)
    with pytest.raises(UnsupportedModelError) as err:
        mmaccel.accelerate(model)
    assert "'llama'" in str(err.value)
    for model_type in supported_model_types():
        assert model_type in str(err.value)
    assert not mmaccel.is_accelerated(model)


def test_bad_config_changes_nothing(tiny):
    model, _ = tiny("llava")
    with pytest.raises(mmaccel.ConfigError):
        mmaccel.accelerate(model, kernels="fastest")
    assert not mmaccel.is_accelerated(model)


def test_triton_on_cpu_without_interpreter_fails_at_accelerate(tiny, monkeypatch):
    model, _ = tiny("llava")
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the model could be moved to CUDA instead")
    # Other tests may already have fixed interpreter mode for this process: pretend it is off.
    monkeypatch.setattr(kernels_attention, "_interpreter_mode", lambda: False)
    with pytest.raises(RuntimeError, match=r"kernels='triton' cannot run.*needs CUDA tensors.*kernels='auto'"):
        mmaccel.accelerate(model, kernels="triton")
    assert not mmaccel.is_accelerated(model)
