from pathlib import Path

import pytest

from mmaccel.eval.common import Sample
from mmaccel.eval.mme import Mme, parse_pred_ans
from tests.eval.fixtures import write_mme


@pytest.mark.parametrize("text, expected", [
    ("Yes", "yes"), (" no. ", "no"), ("Y", "yes"), ("n", "no"), ("x", "other"), ("Yes, there is.", "yes"),
    ("No, there is not.", "no"), ("I think yes", "other"), ("nope", "no"), ("", "other"), ("y.", "yes"),
    ("e.g. yes", "other"),
])
def test_parse_pred_ans_is_lmms_evals(text, expected):
    assert parse_pred_ans(text) == expected


def test_prompt_swaps_the_suffix():
    task = Mme()

    s = Sample(key="k", index=0, kind="image", question="Is there a dog? Please answer yes or no.", answer="yes",
               load_media=lambda: None)
    assert task.prompt(s) == "Is there a dog?\nAnswer the question using a single word or phrase."


def test_load_reads_every_shard_and_pairs(tmp_path: Path):
    root = write_mme(tmp_path / "MME", images_per_category=2)
    samples = Mme().load(root)
    assert len(samples) == 12
    assert samples[0].key == "existence/existence/0000.png#1" and samples[1].key.endswith("#2")
    assert [s.answer for s in samples[:2]] == ["yes", "no"]
    limited = Mme().load(root, limit=1)
    assert len(limited) == 6 and {s.fields["image"] for s in limited} == {
        "existence/0000.png", "count/0000.png", "code_reasoning/0000.png"}


def _record(category, image, parsed, answer):
    return {"parsed": parsed, "answer": answer, "fields": {"category": category, "image": image}}


def test_acc_plus_pairing_and_totals_by_hand():
    records = [
        # existence: image a both right (acc 100, acc+ 100); image b one right (acc 50, acc+ 0) → score 125
        _record("existence", "a", "yes", "yes"), _record("existence", "a", "no", "no"),
        _record("existence", "b", "yes", "yes"), _record("existence", "b", "yes", "no"),
        # count: one image, both wrong → 0
        _record("count", "c", "no", "yes"), _record("count", "c", "other", "no"),
        # code_reasoning (cognition): both right → 200
        _record("code_reasoning", "d", "yes", "yes"), _record("code_reasoning", "d", "no", "no"),
        # an image with one answer only (the other failed) is left out
        _record("count", "e", "yes", "yes"),
    ]
    m = Mme().metrics(records)
    assert m["categories"]["existence"] == {"images": 2, "acc": 75.0, "acc_plus": 50.0, "score": 125.0}
    assert m["categories"]["count"]["score"] == 0.0
    assert m["perception"] == 125.0 and m["perception_max"] == 400
    assert m["cognition"] == 200.0 and m["cognition_max"] == 200
    assert m["incomplete_images"] == 1
