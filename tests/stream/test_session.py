"""Carrier-token streaming sessions on the tiny video models."""

import pytest
import torch

import mmaccel
from mmaccel import ConfigError, accelerate
from mmaccel.eval.runner import build_inputs
from mmaccel.zoo.tiny.media import make_video

QUESTION = "What happens in the video?"


def _frames(count, seed=0):
    return make_video(count, 24, 24, seed=seed)


def test_dense_streaming_answers_as_generate_on_the_whole_video(tiny):
    """method="none": frames prefilled one by one against the cache, kept whole, no carriers: the same prompt and
    positions as the processor's, so the same greedy tokens as generate."""
    model, processor = tiny("llava_next_video")
    frames = _frames(4)
    session = mmaccel.stream(model, processor, {"method": "none"})
    session.add_frames(frames[:1])
    session.add_frames(frames[1:])
    streamed = "".join(session.ask(QUESTION, max_new_tokens=8, min_new_tokens=8))
    inputs = build_inputs(processor, "video", frames, QUESTION, torch.device("cpu"))
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    expected = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert streamed == expected
    assert session.stats()["tokens_in_cache"] == inputs["input_ids"].shape[1] - len(session._template_ids(
        QUESTION)[1])


@pytest.mark.parametrize("family", ["llava_next_video", "llava_onevision"])
def test_memory_is_bounded_by_the_configuration_not_the_stream(tiny, family):
    model, processor = tiny(family)
    config = {"method": "carrier", "max_frames": 3, "recent_frames": 1, "topk_tokens": 2}
    session = mmaccel.stream(model, processor, config)
    sizes = []
    for index in range(9):
        session.add_frames(_frames(1, seed=index))
        sizes.append((session.stats()["tokens_in_cache"], session.stats()["kv_bytes"]))
    stats = session.stats()
    prefix = len(session._prefix_ids)
    per_frame = stats["visual_tokens_seen"] // 9
    # two older frames at carrier + 2 tokens, the newest whole with its carrier
    assert stats["tokens_in_cache"] == prefix + 2 * 3 + per_frame + 1
    assert stats["frames_seen"] == 9 and stats["frames_remembered"] == 3
    assert sizes[3:] == [sizes[3]] * 6  # flat once the bank is full
    answer = "".join(session.ask(QUESTION, max_new_tokens=4))
    assert isinstance(answer, str) and session.stats()["last_ttft_s"] > 0


def test_ask_leaves_the_cache_as_it_was_and_the_carrier_keeps_what_it_saw(tiny):
    model, processor = tiny("llava_next_video")
    session = mmaccel.stream(model, processor, {"method": "carrier"})
    session.add_frames(_frames(1))
    # the carrier was computed with its frame present: its KV is not that of the carrier embedding alone
    with_frame = [layer.keys[..., -1:, :].clone() for layer in session.cache.layers]
    assert session.stats()["tokens_in_cache"] == len(session._prefix_ids) + 1  # the frame's tokens evicted
    before = [(layer.keys.clone(), layer.values.clone()) for layer in session.cache.layers]
    first = "".join(session.ask(QUESTION, max_new_tokens=5, min_new_tokens=5))
    after = [(layer.keys, layer.values) for layer in session.cache.layers]
    assert all(torch.equal(a, b) for pair in zip(before, after, strict=True) for a, b in zip(*pair, strict=True))
    assert first == "".join(session.ask(QUESTION, max_new_tokens=5, min_new_tokens=5))

    alone = mmaccel.stream(model, processor, {"method": "none"})
    alone._forward(session.memory[0].carrier[None])
    assert not torch.allclose(alone.cache.layers[-1].keys[..., -1:, :], with_frame[-1])
    session.reset()
    assert session.stats()["tokens_in_cache"] == len(session._prefix_ids) and session.frames_seen == 0


def test_the_oldest_of_the_most_alike_adjacent_frames_is_dropped(tiny):
    model, processor = tiny("llava_next_video")
    session = mmaccel.stream(model, processor, {"method": "carrier", "max_frames": 2})
    different = _frames(1, seed=1)
    session.add_frames([_frames(1, seed=5)[0], different[0], different[0]])
    assert [m.index for m in session.memory] == [0, 2]


def test_dense_positions_and_bad_inputs(tiny):
    model, processor = tiny("llava_next_video")
    session = mmaccel.stream(model, processor, {"method": "carrier", "positions": "dense"})
    session.add_frames(_frames(2), timestamps=[0.0, 0.5])
    assert session.next_position == len(session._prefix_ids) + 2 * (session.visual_tokens_seen // 2 + 1)
    assert [m.timestamp for m in session.memory] == [0.0, 0.5]
    "".join(session.ask(QUESTION, max_new_tokens=2))
    with pytest.raises(ValueError, match="2 frames but 1 timestamps"):
        session.add_frames(_frames(2), timestamps=[0.0])
    llava, llava_processor = tiny("llava")
    with pytest.raises(ValueError, match="streaming supports model types llava_next_video, llava_onevision"):
        mmaccel.stream(llava, llava_processor)
    with pytest.raises(ConfigError, match="stream.positions='absolute' is not allowed"):
        mmaccel.stream(model, processor, {"method": "carrier", "positions": "absolute"})
    with pytest.raises(ConfigError, match="configures mmaccel.stream"):
        accelerate(model, "stream")


def test_ask_yields_the_answer_as_it_is_generated_on_the_bundled_video_model():
    from mmaccel.zoo import load

    model, processor = load("shapes-video")
    session = mmaccel.stream(model, processor, {"method": "carrier", "recent_frames": 8})
    session.add_frames(make_video(8, 128, 128, seed=1))
    pieces = list(session.ask("Which shapes appear in the video?", max_new_tokens=12, min_new_tokens=12))
    assert len([p for p in pieces if p]) >= 3 and all(isinstance(p, str) for p in pieces)
