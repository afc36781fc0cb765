import torch

from mmaccel.prune.scoring import keep_by_mass, normalized_scores, probe_positions


def test_probes_are_the_tail_plus_a_seeded_sample():
    probes = probe_positions(100, recent=10, random_fraction=0.1, seed=3, device=torch.device("cpu"))
    assert probes.tolist()[-10:] == list(range(90, 100))
    assert len(probes) == 10 + 9 and probes.tolist() == sorted(set(probes.tolist()))
    assert torch.equal(probes, probe_positions(100, 10, 0.1, 3, torch.device("cpu")))
    assert not torch.equal(probes, probe_positions(100, 10, 0.1, 4, torch.device("cpu")))


def test_normalized_scores_by_brute_force():
    torch.manual_seed(0)
    batch, q_heads, kv_heads, length, dim = 1, 4, 2, 9, 8
    query = torch.randn(batch, q_heads, length, dim)
    key = torch.randn(batch, kv_heads, length, dim)
    allowed = torch.ones(length, length, dtype=torch.bool).tril()[None, None]
    probes = torch.tensor([2, 6, 8])
    scores = normalized_scores(query, key, allowed, probes, scale=dim ** -0.5)
    for head in range(kv_heads):
        for j in range(length):
            total, seen = 0.0, 0
            for p in probes.tolist():
                if j <= p:
                    seen += 1
                    for g in range(2):
                        logits = query[0, head * 2 + g, p] @ key[0, head, : p + 1].T * dim ** -0.5
                        total += torch.softmax(logits, -1)[j].item()
            expected = total / max(seen, 1) / 2
            assert abs(scores[0, head, j].item() - expected) < 1e-5
    # the normalization removes the early-token bias: a key seen by one probe is not out-weighed by one seen by all
    assert scores[0, 0, 8].item() > 0


def test_keep_by_mass_keeps_the_smallest_set_reaching_tau():
    scores = torch.tensor([[[0.05, 0.5, 9.0, 0.3, 0.15]]])
    candidates = torch.tensor([[True, True, False, True, True]])  # position 2 is text: never a candidate
    assert keep_by_mass(scores, candidates, 0.8).tolist() == [[[False, True, False, True, False]]]
    assert keep_by_mass(scores, candidates, 0.81).tolist() == [[[False, True, False, True, True]]]
    assert keep_by_mass(scores, candidates, 1.0).tolist() == [[[True, True, False, True, True]]]
    assert keep_by_mass(scores, torch.zeros_like(candidates), 0.9).sum() == 0
