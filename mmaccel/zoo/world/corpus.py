"""The text of the shapes world, to train the reference models' tokenizer on: every kind of prompt and answer the
trainers and the evaluation sets use (POPE, MME, captions, Video-MME), and the chat template's role words."""

from __future__ import annotations

import numpy as np

from .scenes import sample_scene
from .tasks import MME_CATEGORIES, image_qa_turns, mme_pair
from .video_tasks import video_qa_turns, video_questions, videomme_prompt
from .videos import sample_video


def world_corpus(seed: int = 0, scenes: int = 2000, videos: int = 300) -> list[str]:
    """Texts about ``scenes`` images and ``videos`` videos drawn from ``seed`` (same seed, same list)."""
    rng = np.random.default_rng(seed)
    texts = ["USER: ASSISTANT:"]
    for _ in range(scenes):
        scene = sample_scene(rng)
        texts += [f"{prompt} {answer}" for prompt, answer in image_qa_turns(scene, rng, 4)]
        for category in MME_CATEGORIES:
            texts += [f"{question} {answer}" for question, answer in mme_pair(scene, category, rng) or []]
    for _ in range(videos):
        questions = video_questions(sample_video(rng, num_frames=8), rng)
        texts += [f"{prompt} {answer}" for prompt, answer in video_qa_turns(questions, rng)]
        texts += [f"{videomme_prompt(q.question, q.options)} {q.answer}" for q in questions]
    return texts
