"""AvisC's blind tokens: the layer choice and threshold by hand, the last-query attention against a full softmax,
and the branch's embeddings."""

import torch

from mmaccel.adapters import get_adapter
from mmaccel.contrast.blind import blind_token_mask, last_query_attention, only_tokens_kept
from mmaccel.zoo.tiny import sample_inputs


def test_blind_tokens_by_hand():
    visual = torch.tensor([[False, True, True, True, True, False]])
    # layer 0 puts 0.9 of its attention on the visual tokens, layer 1 only 0.2: with a layer share of 0.5 only
    # layer 0 is read (sorted shares 0.82, 0.18: none below 0.5, so k = 1)
    layer0 = torch.tensor([[0.05, 0.1, 0.1, 0.6, 0.1, 0.05]])
    layer1 = torch.tensor([[0.4, 0.2, 0.0, 0.0, 0.0, 0.4]])
    blind = blind_token_mask([layer0, layer1], visual, layer_share=0.5, lam=1.0)
    # visual values 0.1, 0.1, 0.6, 0.1: mean 0.225, std 0.2165, threshold 0.44 -> only position 3
    assert blind.tolist() == [[False, False, False, True, False, False]]
    # reading both layers (share 1.0) averages in layer 1, whose mass sits on position 1: it joins the blind set
    # at a lower threshold (lambda 0)
    both = blind_token_mask([layer0, layer1], visual, layer_share=1.0, lam=0.0)
    assert both.tolist() == [[False, True, False, True, False, False]]
    # no visual tokens: none blind
    assert not blind_token_mask([layer0], torch.zeros_like(visual)).any()


def test_last_query_attention_is_the_softmax_of_the_last_row():
    torch.manual_seed(0)
    query, key = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 5, 8)
    padding = torch.tensor([[True] * 5, [False, False, True, True, True]])  # row 1 left-padded by 2
    mask = padding[:, None, None, :] & torch.ones(5, 5, dtype=torch.bool).tril()[None, None]
    got = last_query_attention(query, key, mask, scaling=None)
    keys = key.repeat_interleave(2, dim=1)
    scores = (query @ keys.transpose(-1, -2)) / 8 ** 0.5
    expected = scores.masked_fill(~mask, float("-inf")).softmax(-1)[:, :, -1].mean(1)
    assert torch.allclose(got, expected, atol=1e-6)
    assert got[1, :2].abs().max() == 0 and torch.allclose(got.sum(-1), torch.ones(2))


def test_only_the_kept_embeddings_reach_the_language_model(tiny):
    model, processor = tiny("llava")
    inputs = sample_inputs("llava", processor, batch_size=1, seed=0)
    adapter = get_adapter(model)
    visual = adapter.visual_token_mask(inputs["input_ids"])
    keep = ~visual
    keep[0, visual[0].nonzero()[0, 0]] = True  # one visual token kept
    seen = []
    handle = adapter.decoder_layers[0].register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).clone()),
        with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
            with only_tokens_kept(adapter.language_model, keep):
                model(**inputs)
            model(**inputs)  # the hook is gone
    finally:
        handle.remove()
    plain, branch, after = seen
    assert torch.equal(branch[~keep], torch.zeros_like(branch[~keep]))
    assert torch.equal(branch[keep], plain[keep]) and plain[~keep].abs().sum() > 0 and torch.equal(after, plain)
