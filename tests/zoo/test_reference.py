"""The bundled reference models load offline and really look at their inputs (fast held-out checks)."""

import numpy as np
import pytest

from mmaccel.models import DEFAULT_MODEL, load_model
from mmaccel.zoo import load, reference_names
from mmaccel.zoo.score import answer_video_question
from mmaccel.zoo.train_image import quick_pope_accuracy
from mmaccel.zoo.world import WORLD_SIZE, render_video, sample_video
from mmaccel.zoo.world.video_tasks import video_questions


def test_both_models_are_bundled_and_shapes_image_is_the_default():
    assert reference_names() == ["shapes-image", "shapes-video"]
    assert DEFAULT_MODEL == "shapes-image"


def test_shapes_image_loads_offline_with_256_visual_tokens():
    model, processor = load("shapes-image")
    assert model.config.model_type == "llava" and model.config.image_seq_length == 256
    assert not model.training
    same, _ = load_model("shapes-image")
    assert type(same) is type(model)


def test_shapes_video_loads_offline_with_64_tokens_per_frame():
    model, processor = load("shapes-video")
    assert model.config.model_type == "llava_next_video"
    frames = np.zeros((8, WORLD_SIZE, WORLD_SIZE, 3), np.uint8)
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "video"},
                                                                          {"type": "text", "text": "?"}]}],
                                           add_generation_prompt=True)
    inputs = processor(text=[prompt], videos=[frames], return_tensors="pt")
    assert (inputs["input_ids"] == processor.tokenizer.video_token_id).sum() == 8 * 64


def test_shapes_image_answers_existence_questions_above_chance():
    model, processor = load("shapes-image")
    accuracy = quick_pope_accuracy(model, processor, seed=123_456, num_images=20)  # 40 balanced questions
    assert accuracy >= 0.85  # 0.95 with the bundled model; chance is 0.5; the card has the full held-out figures


def test_shapes_video_counts_objects_over_time_above_chance():
    # One kind of question keeps this check quick and its bound meaningful: "how many objects appear in the video in
    # total?" (74.8 % held out; see its model card).
    model, processor = load("shapes-video")
    rng = np.random.default_rng(654_321)
    correct = 0
    for _ in range(24):
        video = sample_video(rng)
        question = video_questions(video, rng, count=1, first="count")[0]
        answer = answer_video_question(model, processor, render_video(video, seed=1), question.question,
                                       question.options, max_new_tokens=8)  # answers read " 3: C"
        correct += answer == question.answer
    assert correct / 24 >= 0.45, correct  # chance is 0.25


def test_unknown_reference_model_is_named():
    with pytest.raises(ValueError, match="shapes-image"):
        load("shapes-audio")
