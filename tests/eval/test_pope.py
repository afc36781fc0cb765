from pathlib import Path

import pytest

from mmaccel.eval.common import DataLayoutError, Sample
from mmaccel.eval.pope import Pope, pope_scores
from tests.eval.fixtures import write_pope


def test_scores_by_hand():
    predictions = ["yes", "yes", "no", "yes.", "no", "yes"]
    answers = ["yes", "no", "yes", "yes", "no", "no"]
    m = pope_scores(predictions, answers)
    # TP = 1 (row 0), FP = 2 (rows 1, 5), FN = 1 (row 2; "yes." is neither yes nor no, so row 3 is not an FN)
    assert m["accuracy"] == pytest.approx(2 / 6)
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["recall"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert m["yes_ratio"] == pytest.approx(3 / 6)  # lmms-eval's: share of ground-truth yes
    assert m["pred_yes_ratio"] == pytest.approx(3 / 6)  # share of predictions that are exactly "yes"
    assert m["false_positive_rate"] == pytest.approx(2 / 3)
    assert m["unparsed"] == 1


def test_scores_with_empty_denominators_are_zero():
    m = pope_scores(["no", "no"], ["no", "no"])
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, 1.0)


def test_load_pooled_and_split_with_limit(tmp_path: Path):
    root = write_pope(tmp_path / "POPE", per_split=4)
    task = Pope()
    pooled = task.load(root)
    assert len(pooled) == 12 and [s.key for s in pooled] == [str(i) for i in range(12)]
    assert {s.fields["category"] for s in pooled} == {"adversarial", "popular", "random"}
    limited = task.load(root, limit=2)
    assert [s.key for s in limited] == ["0", "1", "4", "5", "8", "9"]
    random_split = task.load(root, split="random")
    assert [s.fields["category"] for s in random_split] == ["random"] * 4
    image = pooled[0].load_media()
    assert image.mode == "RGB" and image.size == (32, 32)


def test_prompt_and_parse_are_lmms_evals():
    task = Pope()
    s = Sample(key="1", index=0, kind="image", question="  Is there a dog in the image? ", answer="yes",
               load_media=lambda: None)
    assert task.prompt(s) == "Is there a dog in the image?\nAnswer the question using a single word or phrase."
    assert task.parse(" Yes \n") == "yes" and task.parse("Yes.") == "yes."


def test_missing_layout_names_what_is_expected(tmp_path: Path):
    with pytest.raises(DataLayoutError, match="lmms-lab/POPE"):
        Pope().load(tmp_path)
    with pytest.raises(DataLayoutError, match="allowed: adversarial, popular, random"):
        Pope().load(tmp_path, split="hard")


def test_metrics_per_category_and_overall():
    records = [{"parsed": p, "answer": a, "fields": {"category": c}}
               for p, a, c in [("yes", "yes", "random"), ("no", "yes", "random"), ("yes", "no", "adversarial"),
                               ("no", "no", "adversarial")]]
    m = Pope().metrics(records)
    assert set(m) == {"overall", "random", "adversarial"}
    assert m["overall"]["accuracy"] == 0.5 and m["random"]["recall"] == 0.5
    assert m["adversarial"]["false_positive_rate"] == 0.5 and m["overall"]["n"] == 4
