from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from mmaccel.eval.runner import build_inputs
from mmaccel.integrations.lmms_eval import MMAccelLMM
from mmaccel.patch import is_accelerated
from tests.eval.fixtures import numbered_frames, write_video


def _request(context, gen_kwargs, doc_id, task="pope", split="test"):
    return SimpleNamespace(args=(context, gen_kwargs, lambda doc: doc["visuals"], doc_id, task, split))


def test_generate_until_answers_each_request_like_plain_greedy(tmp_path):
    lmm = MMAccelLMM(pretrained="tiny-llava", preset="kernels", device="cpu")
    assert is_accelerated(lmm.model)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    lmm.task_dict = {"pope": {"test": {0: {"visuals": [image]}, 1: {"visuals": [image]}}}}
    answers = lmm.generate_until([
        _request("Is there a dog?", {"max_new_tokens": 4, "temperature": 0, "until": []}, 0),
        _request("Is there a cat?", {"max_new_tokens": 6}, 1),
    ])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    inputs = build_inputs(lmm.processor, "image", image, "Is there a cat?", torch.device("cpu"))
    with torch.no_grad():
        out = lmm.model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert answers[1] == lmm.processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:],
                                                        skip_special_tokens=True)


def test_until_cuts_the_answer_and_videos_are_read_from_paths(tmp_path):
    lmm = MMAccelLMM(pretrained="tiny-llava_next_video", device="cpu", frames=4)
    write_video(tmp_path / "clip.mp4", numbered_frames(8))
    full = lmm.answer("What happens?", [str(tmp_path / "clip.mp4")], {"max_new_tokens": 8})
    assert full
    stop = full[len(full) // 2:][:2]
    cut = lmm.answer("What happens?", [str(tmp_path / "clip.mp4")], {"max_new_tokens": 8, "until": [stop]})
    assert cut == full.split(stop)[0] and len(cut) < len(full)
