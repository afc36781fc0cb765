"""The shapes-image trainer: its conversations match the evaluation prompt exactly and only answers are learned."""

import numpy as np
import torch

from mmaccel.zoo.reference import IMAGE_SIZE, build_shapes_image, shapes_image_config, shapes_image_processor
from mmaccel.zoo.train_image import VisionProbe, make_batch, pretrain_vision, scene_batch, vision_batch
from mmaccel.zoo.training import encode_conversation
from mmaccel.zoo.world import SHAPES, sample_scene
from mmaccel.zoo.world.tasks import SHORT_ANSWER_PROMPT, image_qa_turns


def test_first_turn_is_the_evaluation_prompt_token_for_token():
    processor = shapes_image_processor()
    question = "Is there a star in the image?" + SHORT_ANSWER_PROMPT
    content = [{"type": "image"}, {"type": "text", "text": question}]
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)], return_tensors="pt")
    ids, labels = encode_conversation(processor.tokenizer, [(question, "yes")], media_tokens=256)
    prompt_len = inputs["input_ids"].shape[1]
    assert ids[:prompt_len] == inputs["input_ids"][0].tolist()
    assert all(label == -100 for label in labels[:prompt_len])
    assert processor.tokenizer.decode([t for t in labels if t != -100]) == " yes</s>"


def test_turns_are_deterministic_and_true():
    scene = sample_scene(np.random.default_rng(3))
    turns = image_qa_turns(scene, np.random.default_rng(4), 12)
    assert turns == image_qa_turns(scene, np.random.default_rng(4), 12)
    for question, answer in turns:
        if question.startswith("Is there a ") and " in the image?" in question and len(question.split()) == 7:
            shape = question.split()[3]
            assert answer == ("yes" if shape in scene.shapes_present() else "no")


def test_batch_shapes_and_model_config():
    processor = shapes_image_processor()
    config = shapes_image_config(processor.tokenizer)
    assert config.image_seq_length == 256  # the brief asks for at least 256 visual tokens per image
    batch = make_batch(processor, np.random.default_rng(0), batch_size=2, num_turns=2, image_tokens=256)
    assert batch["pixel_values"].shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert ((batch["input_ids"] == processor.tokenizer.image_token_id).sum(-1) == 256).all()
    assert torch.equal(batch["labels"][batch["attention_mask"] == 0],
                       torch.full_like(batch["labels"][batch["attention_mask"] == 0], -100))


def test_vision_stage_targets_are_the_scenes_and_its_loss_falls(tmp_path):
    torch.manual_seed(0)
    model, processor = build_shapes_image(0)
    rng = np.random.default_rng(5)
    scenes = [sample_scene(np.random.default_rng(seed)) for seed in (1, 2)]
    batch = scene_batch(processor, scenes, rng, patch=8)
    assert batch["shape_targets"].shape == (2, 256)
    for row, scene in enumerate(scenes):
        present = {SHAPES[int(c) - 1] for c in batch["shape_targets"][row].unique() if c > 0}
        assert present <= scene.shapes_present()
        assert batch["presence"][row].tolist() == [float(s in scene.shapes_present()) for s in SHAPES]
    history, _, head = pretrain_vision(model, processor, tmp_path, steps=12, batch_size=4, lr=1e-3, seed=0)
    assert history[-1]["patch_loss"] < history[0]["patch_loss"]
    assert head.out_features == 2 * (1 + len(SHAPES))
    accuracy = VisionProbe(model).accuracy(vision_batch(processor, rng, 2, patch=8))
    assert set(accuracy) == {"object_patch_acc", "presence_acc"}


def test_init_continues_from_a_saved_model(tmp_path):
    from mmaccel.zoo.train_image import load_weights

    trained, _ = build_shapes_image(seed=1)
    trained.save_pretrained(tmp_path)
    model, _ = build_shapes_image(seed=2)
    load_weights(model, tmp_path)
    assert torch.equal(model.model.vision_tower.embeddings.patch_embedding.weight,
                       trained.model.vision_tower.embeddings.patch_embedding.weight)
    assert torch.equal(model.lm_head.weight, trained.lm_head.weight)


def test_rounds_continue_each_other_and_leave_one_model(tmp_path, monkeypatch):
    import json

    from mmaccel.zoo import train_image

    calls = []

    def fake_train(out, init=None, **kwargs):
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.safetensors").write_text(str(len(calls)))
        calls.append((out, init, kwargs))
        return {"wall_minutes": 1.5, "steps": kwargs["steps"], "history": [{"step": 0}]}

    monkeypatch.setattr(train_image, "train", fake_train)
    rounds = ({"vision_steps": 3, "steps": 2, "lr": 1e-3, "seed": 0}, {"vision_steps": 1, "steps": 1, "lr": 5e-4,
                                                                      "seed": 7})
    summary = train_image.train_rounds(tmp_path / "model", rounds, eval_every=0, batch_size=4)
    (first, first_init, first_args), (second, second_init, second_args) = calls
    assert first_init is None and second_init == first and second == tmp_path / "model"
    assert first_args["seed"] == 0 and second_args["seed"] == 7 and second_args["batch_size"] == 4
    assert not first.exists() and (tmp_path / "model" / "model.safetensors").read_text() == "1"
    saved = json.loads((tmp_path / "model" / "training.json").read_text())
    assert saved == summary and [r["steps"] for r in saved["rounds"]] == [2, 1]
    assert saved["wall_minutes_all_rounds"] == 3.0 and "history" not in saved["rounds"][0]


def test_rounds_option_runs_the_first_rounds_of_the_bundled_recipe(tmp_path, monkeypatch, capsys):
    import pytest

    from mmaccel.zoo import train_image

    calls = []

    def fake_train(out, init=None, **kwargs):
        out.mkdir(parents=True, exist_ok=True)
        calls.append(kwargs)
        return {"wall_minutes": 1.0, "steps": kwargs["steps"], "history": []}

    monkeypatch.setattr(train_image, "train", fake_train)
    assert train_image.main(["--recipe", "bundled", "--rounds", "2", "--out", str(tmp_path / "r2")]) == 0
    assert [call["seed"] for call in calls] == [r["seed"] for r in train_image.BUNDLED_ROUNDS[:2]]
    for bad in (["--recipe", "bundled", "--rounds", "0"], ["--rounds", "2"]):
        with pytest.raises(SystemExit):
            train_image.main([*bad, "--out", str(tmp_path / "x")])
    assert "--rounds must be 1 to 3, got 0" in capsys.readouterr().err
