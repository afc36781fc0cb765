"""Quick held-out checks of the reference models, used by the trainers and the tests: greedy answers to
shapes-world questions, asked and parsed exactly as the evaluation harness (:mod:`mmaccel.eval`) asks and parses
them. Full benchmark runs go through ``mmaccel eval``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..eval.pope import POST_PROMPT, Pope
from ..eval.runner import build_inputs
from ..eval.videomme import extract_answer_letter, videomme_prompt


@torch.no_grad()
def answer_image_questions(model: Any, processor: Any, images: list[Any], questions: list[str],
                           batch_size: int = 16, max_new_tokens: int = 8) -> list[str]:
    """Greedy answers to one question per image, with the POPE prompt and parse (``lower().strip()``), in
    left-padded batches of ``batch_size``."""
    pope = Pope()
    predictions = []
    device = next(model.parameters()).device
    for start in range(0, len(questions), batch_size):
        prompts = []
        for question in questions[start:start + batch_size]:
            content = [{"type": "image"}, {"type": "text", "text": question.strip() + POST_PROMPT}]
            prompts.append(processor.apply_chat_template([{"role": "user", "content": content}],
                                                         add_generation_prompt=True))
        inputs = processor(text=prompts, images=images[start:start + batch_size], return_tensors="pt",
                           padding=True).to(device)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        texts = processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        predictions.extend(pope.parse(text) for text in texts)
    return predictions


@torch.no_grad()
def answer_video_question(model: Any, processor: Any, frames: np.ndarray, question: str,
                          options: list[str] | tuple[str, ...], max_new_tokens: int = 16) -> str:
    """The letter (A-D, or "" if none) the model answers to a four-option question about ``frames``, asked with
    the Video-MME prompt and read with the official extraction (greedy)."""
    inputs = build_inputs(processor, "video", frames, videomme_prompt(question, options),
                          next(model.parameters()).device)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    text = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return extract_answer_letter(text)
