"""The shapes-video trainer: conversations match the evaluation prompt, answers are true, the image model loads."""

import numpy as np
import pytest
import torch

from mmaccel.zoo.reference import VIDEO_FRAMES, build_shapes_image, shapes_video_processor
from mmaccel.zoo.train_video import (
    CAUSAL_TRACK_FLAGS,
    SUMMARY_SETS,
    TRACK_FLAGS,
    OptionProbe,
    SummaryProbe,
    initialise,
    letter_batch,
    make_batch,
    sample_questions,
    token_targets,
    video_summary,
)
from mmaccel.zoo.training import encode_conversation
from mmaccel.zoo.world.video_tasks import option_text, video_qa_turns, videomme_prompt


def test_first_turn_is_the_evaluation_prompt_token_for_token():
    processor = shapes_video_processor()
    prompt_text = videomme_prompt("Which shape moves during the video?", ["A. star.", "B. ring.", "C. cross.",
                                                                          "D. square."])
    content = [{"type": "video"}, {"type": "text", "text": prompt_text}]
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    frames = np.zeros((VIDEO_FRAMES, 128, 128, 3), np.uint8)
    inputs = processor(text=[prompt], videos=[frames], return_tensors="pt")
    ids, labels = encode_conversation(processor.tokenizer, [(prompt_text, "B")], media_tokens=VIDEO_FRAMES * 64,
                                      media_token_id=processor.tokenizer.video_token_id)
    length = inputs["input_ids"].shape[1]
    assert ids[:length] == inputs["input_ids"][0].tolist()
    assert processor.tokenizer.decode([t for t in labels if t != -100]) == " B</s>"


def test_turns_answer_with_the_letter_or_the_option_text():
    video, questions = sample_questions(np.random.default_rng(0), 3)
    turns = video_qa_turns(questions, np.random.default_rng(1), multiple_choice=0.5)
    for question, (prompt, answer) in zip(questions, turns, strict=True):
        if prompt.startswith("Select the best answer"):
            assert answer == question.answer
        else:
            assert prompt.startswith(question.question) and answer == option_text(question)


def test_named_answers_give_the_option_then_its_letter_and_the_official_extraction_reads_it():
    from mmaccel.eval.videomme import extract_answer_letter
    from mmaccel.zoo.world.video_tasks import answer_letter

    rng = np.random.default_rng(4)
    kinds = set()
    for _ in range(40):
        _, questions = sample_questions(rng, 3)
        for question, (prompt, answer) in zip(questions, video_qa_turns(questions, rng, 1.0, name_then_letter=True),
                                              strict=True):
            kinds.add(question.kind)
            assert prompt.startswith("Select the best answer")
            assert answer == f"{option_text(question)}: {question.answer}"
            assert extract_answer_letter(answer) == answer_letter(answer) == question.answer
    assert len(kinds) == 6
    assert answer_letter("B") == "B" and answer_letter("star") is None and answer_letter("3") is None
    assert answer_letter("") is None and answer_letter("AB") is None


def test_kind_first_answers_repeat_the_questions_word_then_name_the_option_and_give_its_letter():
    from mmaccel.eval.videomme import extract_answer_letter
    from mmaccel.zoo.world.video_tasks import KIND_WORDS, answer_letter

    rng = np.random.default_rng(4)
    kinds = set()
    tokenizer = shapes_video_processor().tokenizer
    for _ in range(40):
        _, questions = sample_questions(rng, 3)
        for question, (_, answer) in zip(questions, video_qa_turns(questions, rng, 1.0, True, True),
                                         strict=True):
            kinds.add(question.kind)
            word = KIND_WORDS[question.kind]
            assert f" {word} " in f" {question.question.lower()} "
            assert answer == f"{word} {option_text(question)}: {question.answer}"
            assert extract_answer_letter(answer) == answer_letter(answer) == question.answer
    assert len(kinds) == 6
    assert all(len(tokenizer(f" {word}", add_special_tokens=False)["input_ids"]) == 1 for word in KIND_WORDS.values())
    assert video_qa_turns(questions, np.random.default_rng(0), 1.0, False, True)[0][1] == questions[0].answer


def test_named_letter_questions_answer_the_stated_option_then_its_letter():
    tokenizer = shapes_video_processor().tokenizer
    batch = letter_batch(tokenizer, np.random.default_rng(2), 6, name_then_letter=True)
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        text = tokenizer.decode(ids[labels == -100], skip_special_tokens=True)
        answer = tokenizer.decode(labels[labels != -100], skip_special_tokens=True).strip()
        stated = text.split(" It is ")[1].split(".")[0]
        name, letter = answer.split(": ")
        assert name == stated and f"\n{letter}. {stated}.\n" in text


def test_batch_shapes():
    processor = shapes_video_processor()
    batch = make_batch(processor, np.random.default_rng(0), batch_size=2, num_turns=2)
    assert batch["pixel_values_videos"].shape == (2, VIDEO_FRAMES, 3, 128, 128)
    assert ((batch["input_ids"] == processor.tokenizer.video_token_id).sum(-1) == VIDEO_FRAMES * 64).all()
    assert batch["token_shapes"].shape == (2, VIDEO_FRAMES * 64)
    assert batch["token_flags"].shape == (2, VIDEO_FRAMES * 64, len(TRACK_FLAGS))


def test_token_targets_follow_the_tracks():
    from mmaccel.zoo.world import SHAPES, sample_video

    video = sample_video(np.random.default_rng(4), num_frames=VIDEO_FRAMES)
    shapes, flags = token_targets(video, 128, 16)
    shapes, flags = shapes.reshape(VIDEO_FRAMES, 64), flags.reshape(VIDEO_FRAMES, 64, len(TRACK_FLAGS))
    for frame in range(VIDEO_FRAMES):
        visible = {SHAPES.index(t.shape) for t in video.tracks if t.at(frame) is not None}
        assert set(shapes[frame][shapes[frame] >= 0].tolist()) <= visible
        assert ((shapes[frame] >= 0) == (flags[frame, :, 0] >= 0)).all()
    # the first track is there from frame 0 and is the (or a) first to appear; background tokens carry no flags
    first = SHAPES.index(video.tracks[0].shape)
    assert (flags[0][shapes[0] == first][:, 0] == 1).all() and (shapes[0] == first).any()
    movers = {SHAPES.index(t.shape) for t in video.tracks if t.moves}
    for shape in set(shapes[shapes >= 0].tolist()):
        if sum(SHAPES.index(t.shape) == shape for t in video.tracks) == 1:
            assert (flags[shapes == shape][:, 2] == (shape in movers)).all()


def test_causal_token_targets_never_tell_what_comes_later():
    from mmaccel.zoo.world import SHAPES, sample_video

    video = sample_video(np.random.default_rng(4), num_frames=VIDEO_FRAMES)
    shapes, flags = token_targets(video, 128, 16, causal=True)
    shapes, flags = shapes.reshape(VIDEO_FRAMES, 64), flags.reshape(VIDEO_FRAMES, 64, len(CAUSAL_TRACK_FLAGS))
    for track in video.tracks:
        shape = SHAPES.index(track.shape)
        if sum(t.shape == track.shape for t in video.tracks) != 1:
            continue
        for frame in range(VIDEO_FRAMES):
            tokens = flags[frame][shapes[frame] == shape]
            if not len(tokens):
                continue
            moved = track.moves and frame > track.appear and track.leave - 1 > track.appear
            changed = track.change_at is not None and frame >= track.change_at
            assert (tokens[:, 1] == (frame == track.appear)).all()
            assert (tokens[:, 2] == moved).all() and (tokens[:, 3] == changed).all()


def test_causal_token_targets_of_a_known_timeline():
    from mmaccel.zoo.world import SHAPES
    from mmaccel.zoo.world.scenes import BACKGROUNDS, Background
    from mmaccel.zoo.world.videos import Track, VideoScene

    still = Track("circle", "red", 0.25, (0.25, 0.25), (0.25, 0.25), appear=0, leave=4, change_at=2,
                  new_colour="blue")
    mover = Track("star", "green", 0.25, (0.75, 0.75), (0.75, 0.3), appear=1, leave=4)
    video = VideoScene("garden", Background(BACKGROUNDS[0], (90, 90, 90), (110, 110, 110), 8, 0.0), 4, (still, mover))
    shapes, flags = token_targets(video, 128, 16, causal=True)
    shapes, flags = shapes.reshape(4, 64), flags.reshape(4, 64, len(CAUSAL_TRACK_FLAGS))
    circle, star = SHAPES.index("circle"), SHAPES.index("star")
    expected = {(0, circle): [1, 1, 0, 0], (1, circle): [1, 0, 0, 0], (2, circle): [1, 0, 0, 1],
                (3, circle): [1, 0, 0, 1], (1, star): [0, 1, 0, 0], (2, star): [0, 0, 1, 0], (3, star): [0, 0, 1, 0]}
    for (frame, shape), want in expected.items():
        tokens = flags[frame][shapes[frame] == shape]
        assert len(tokens) and (tokens == np.array(want, np.float32)).all(), (frame, SHAPES[shape])
    assert not (shapes[0] == star).any()


def test_letter_questions_answer_the_letter_of_the_stated_option():
    tokenizer = shapes_video_processor().tokenizer
    batch = letter_batch(tokenizer, np.random.default_rng(0), 4)
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        text = tokenizer.decode(ids[labels == -100], skip_special_tokens=True)
        letter = tokenizer.decode(labels[labels != -100][:1]).strip()
        stated = text.split(" It is ")[1].split(".")[0]
        assert f"\n{letter}. {stated}.\n" in text


def test_starts_from_the_image_model(tmp_path):
    from mmaccel.zoo.reference import build_shapes_video

    image_model, _ = build_shapes_image(seed=3)
    image_model.save_pretrained(tmp_path)
    video_model, _ = build_shapes_video(seed=4)
    initialise(video_model, tmp_path)
    assert torch.equal(video_model.model.multi_modal_projector.linear_1.weight,
                       image_model.model.multi_modal_projector.linear_1.weight)
    assert torch.equal(video_model.lm_head.weight, image_model.lm_head.weight)


def test_the_first_question_is_of_the_kind_asked_for():
    from mmaccel.zoo.world.video_tasks import VIDEO_QUESTION_KINDS

    rng = np.random.default_rng(5)
    for kind in VIDEO_QUESTION_KINDS:
        _, questions = sample_questions(rng, 3, first=kind)
        assert questions[0].kind == kind


def test_goes_on_from_a_video_checkpoint(tmp_path):
    from mmaccel.zoo.reference import build_shapes_video

    trained, _ = build_shapes_video(seed=5)
    trained.save_pretrained(tmp_path)
    video_model, _ = build_shapes_video(seed=6)
    initialise(video_model, tmp_path)
    for name, tensor in trained.state_dict().items():
        assert torch.equal(video_model.state_dict()[name], tensor), name


def test_short_videos_for_a_curriculum():
    processor = shapes_video_processor()
    batch = make_batch(processor, np.random.default_rng(1), batch_size=2, num_turns=2, num_frames=3)
    assert batch["pixel_values_videos"].shape[1] == 3
    assert ((batch["input_ids"] == processor.tokenizer.video_token_id).sum(-1) == 3 * 64).all()
    assert batch["token_shapes"].shape == (2, 3 * 64)


def test_option_targets_mark_each_options_closing_stop_and_the_right_one():
    processor = shapes_video_processor()
    tokenizer = processor.tokenizer
    batch = make_batch(processor, np.random.default_rng(3), batch_size=4, num_turns=3)
    asked = 0
    for ids, labels, ends, answers in zip(batch["input_ids"], batch["labels"], batch["option_ends"],
                                          batch["option_answers"], strict=True):
        letters = [tokenizer.decode(labels[i + 1:i + 2]).strip() for i in range(len(labels) - 1)
                   if labels[i] == -100 and labels[i + 1] != -100]
        letter_answers = [a for a in letters if a in "ABCD"]
        for question, answer in zip(ends, answers, strict=True):
            if answer == -100:
                assert (question == -1).all()
                continue
            lines = [tokenizer.decode(ids[end - 2:end + 2]) for end in question]
            assert all(line.endswith(".\n") for line in lines), lines
            assert [tokenizer.decode(ids[:end + 1]).rsplit("\n", 1)[1][0] for end in question] == list("ABCD")
            asked += 1
        assert [("ABCD"[int(a)]) for a in answers if a != -100] == letter_answers
    assert asked > 0


def test_the_option_probe_scores_four_options_per_question(tiny):
    model, _ = tiny("llava")
    probe = OptionProbe(model, layer=1)
    hidden = torch.randn(2, 30, model.config.text_config.hidden_size)
    ends = torch.tensor([[[3, 6, 9, 12], [-1, -1, -1, -1]], [[4, 8, 12, 16], [20, 22, 24, 26]]])
    answers = torch.tensor([[2, -100], [0, 3]])
    loss = probe.loss((hidden, hidden), ends, answers)
    scores = probe.head(hidden).squeeze(-1)
    expected = torch.nn.functional.cross_entropy(
        torch.stack([scores[0, [3, 6, 9, 12]], scores[1, [4, 8, 12, 16]], scores[1, [20, 22, 24, 26]]]),
        torch.tensor([2, 0, 3]))
    assert torch.allclose(loss, expected)
    assert probe.loss((hidden, hidden), ends, torch.full_like(answers, -100)) == 0


def test_the_share_of_four_option_questions_is_chosen():
    processor = shapes_video_processor()
    for share, expected in ((1.0, True), (0.0, False)):
        batch = make_batch(processor, np.random.default_rng(2), batch_size=2, num_turns=2, multiple_choice=share)
        answers = batch["labels"][batch["labels"] != -100]
        letters = processor.tokenizer.decode(answers)
        asked = int((batch["option_answers"] != -100).sum())
        assert (asked == 4) == expected and (asked == 0) == (not expected), (share, asked, letters)


def test_option_targets_find_the_letter_of_named_answers():
    processor = shapes_video_processor()
    plain = make_batch(processor, np.random.default_rng(6), batch_size=2, num_turns=3, multiple_choice=1.0)
    named = make_batch(processor, np.random.default_rng(6), batch_size=2, num_turns=3, multiple_choice=1.0,
                       name_then_letter=True)
    assert torch.equal(plain["option_answers"], named["option_answers"])
    assert (named["option_answers"] != -100).sum() >= 2
    assert ": " in processor.tokenizer.decode(named["labels"][named["labels"] != -100])


@pytest.fixture
def recorded_rounds(monkeypatch):
    """Replaces ``train_video.train`` with a recorder: the list it returns fills with ``(init, kwargs)`` per round."""
    from mmaccel.zoo import train_video

    calls = []

    def fake_train(out, init=None, **kwargs):
        out.mkdir(parents=True, exist_ok=True)
        calls.append((init, kwargs))
        return {"wall_minutes": 1.0, "history": []}

    monkeypatch.setattr(train_video, "train", fake_train)
    return calls


def test_the_previous_recipe_runs_its_rounds_from_the_image_model(tmp_path, recorded_rounds):
    import json

    from mmaccel.zoo import train_video

    calls = recorded_rounds
    image = tmp_path / "image-round-2"
    assert train_video.main(["--recipe", "previous", "--init", str(image), "--out", str(tmp_path / "m"),
                             "--batch-size", "2"]) == 0
    assert len(calls) == len(train_video.PREVIOUS_ROUNDS)
    assert calls[0][0] == image and calls[1][0] == tmp_path / "m" / "round-1"
    for (_, kwargs), stage in zip(calls, train_video.PREVIOUS_ROUNDS, strict=True):
        assert kwargs["batch_size"] == 2 and kwargs["causal_targets"] and kwargs["balanced_kinds"]
        assert {key: kwargs[key] for key in stage} == stage
    assert not any(kwargs["train_vision"] or kwargs.get("kind_first") for _, kwargs in calls[:8])
    kind_first_rounds = [kwargs for _, kwargs in calls[8:]]
    assert kind_first_rounds and all(kwargs["kind_first"] and kwargs["summary_probe"] and kwargs["train_vision"]
                                     for kwargs in kind_first_rounds)
    assert len({kwargs["seed"] for kwargs in kind_first_rounds}) == len(kind_first_rounds)
    saved = json.loads((tmp_path / "m" / "training.json").read_text())
    assert saved["wall_minutes_all_rounds"] == len(train_video.PREVIOUS_ROUNDS)


def test_the_bundled_recipe_runs_kind_first_rounds_from_the_bundled_image_model(tmp_path, recorded_rounds):
    from mmaccel.zoo import train_video

    calls = recorded_rounds
    assert train_video.main(["--recipe", "bundled", "--out", str(tmp_path / "m")]) == 0
    assert len(calls) == len(train_video.BUNDLED_ROUNDS) < len(train_video.PREVIOUS_ROUNDS)
    assert calls[0][0] == train_video.WEIGHTS_DIR / "shapes-image"
    assert calls[-1][0] == tmp_path / "m" / f"round-{len(calls) - 1}"
    for (_, kwargs), stage in zip(calls, train_video.BUNDLED_ROUNDS, strict=True):
        assert {key: kwargs[key] for key in stage} == stage
    assert all(kwargs["kind_first"] and kwargs["train_vision"] and kwargs["summary_probe"]
               and kwargs["causal_targets"] and kwargs["balanced_kinds"] for _, kwargs in calls)
    assert calls[0][1]["letter_warmup"] > 0 and all(kwargs["letter_warmup"] == 0 for _, kwargs in calls[1:])
    assert len({kwargs["seed"] for _, kwargs in calls}) == len(calls)


def test_the_previous_recipe_asks_for_the_image_model_it_starts_from(tmp_path, capsys):
    from mmaccel.zoo import train_video

    with pytest.raises(SystemExit):
        train_video.main(["--recipe", "previous", "--out", str(tmp_path)])
    assert "train_image --recipe bundled --rounds 2 --out DIR" in capsys.readouterr().err


def test_the_bundled_recipe_refuses_the_options_it_sets(tmp_path, capsys):
    from mmaccel.zoo import train_video

    with pytest.raises(SystemExit):
        train_video.main(["--recipe", "bundled", "--out", str(tmp_path), "--steps", "10", "--option-probe",
                          "--train-vision", "--kind-first"])
    assert "--kind-first, --option-probe, --steps, --train-vision" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_video.main(["--recipe", "previous", "--out", str(tmp_path), "--lr", "0.1"])
    assert "--recipe previous sets --lr itself" in capsys.readouterr().err


def _known_video():
    from mmaccel.zoo.world.scenes import BACKGROUNDS, Background
    from mmaccel.zoo.world.videos import Track, VideoScene

    circle = Track("circle", "red", 0.25, (0.25, 0.25), (0.25, 0.25), appear=0, leave=3, change_at=1,
                   new_colour="blue")
    star = Track("star", "green", 0.25, (0.75, 0.75), (0.75, 0.3), appear=1, leave=4)
    ring = Track("ring", "white", 0.2, (0.5, 0.5), (0.5, 0.5), appear=2, leave=4)
    return VideoScene("garden", Background(BACKGROUNDS[0], (90, 90, 90), (110, 110, 110), 8, 0.0), 4,
                      (circle, star, ring))


def test_the_video_summary_of_a_known_timeline():
    from mmaccel.zoo.world import SHAPES
    from mmaccel.zoo.world.scenes import COLOURS

    flags, count = video_summary(_known_video())
    sets = flags[:len(SUMMARY_SETS) * len(SHAPES)].reshape(len(SUMMARY_SETS), len(SHAPES))
    named = {name: {SHAPES[i] for i in np.flatnonzero(row)} for name, row in zip(SUMMARY_SETS, sets, strict=True)}
    assert named == {"seen": {"circle", "star", "ring"}, "first": {"circle"}, "last": {"ring"}, "moved": {"star"},
                     "left": {"circle"}, "changed": {"circle"}}
    colours = flags[len(SUMMARY_SETS) * len(SHAPES):]
    assert [c for c, flag in zip(COLOURS, colours, strict=True) if flag] == ["blue"]
    assert count == 2


def test_summary_targets_sit_after_the_video_and_before_each_answer():
    processor = shapes_video_processor()
    tokenizer = processor.tokenizer
    batch = make_batch(processor, np.random.default_rng(5), batch_size=2, num_turns=3)
    for ids, labels, positions in zip(batch["input_ids"], batch["labels"], batch["summary_positions"],
                                      strict=True):
        video = (ids == tokenizer.video_token_id).nonzero().flatten()
        assert positions[0] == video[-1] + 1 and ids[positions[0]] != tokenizer.video_token_id
        answers = positions[1:][positions[1:] >= 0]
        assert len(answers) == 3
        assert all(labels[p] == -100 and labels[p + 1] != -100 for p in answers)
        assert all(tokenizer.decode(ids[p]).endswith(":") for p in answers)
    assert batch["summary_flags"].shape == (2, len(SUMMARY_SETS) * 8 + 8)


def test_the_summary_probe_scores_every_position_given(tiny):
    model, _ = tiny("llava")
    probe = SummaryProbe(model, layer=1)
    hidden = torch.randn(2, 12, model.config.text_config.hidden_size)
    positions = torch.tensor([[3, 7, -1], [2, 5, 9]])
    flags = (torch.rand(2, probe.flags) > 0.8).float()
    count = torch.tensor([1, 3])
    loss = probe.loss((hidden, hidden), positions, flags, count)
    logits = probe.head(torch.stack([hidden[0, 3], hidden[0, 7], hidden[1, 2], hidden[1, 5], hidden[1, 9]]))
    rows = torch.tensor([0, 0, 1, 1, 1])
    expected = (8 * torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :probe.flags], flags[rows])
                + torch.nn.functional.cross_entropy(logits[:, probe.flags:], count[rows]))
    assert torch.allclose(loss, expected)
