"""Chat prompts for the tiny models' sample inputs, shared by every family module."""

from __future__ import annotations

from typing import Any

#: One question per row (cycled), of different lengths so that a batch is left padded.
QUESTIONS = ["What is it?", "Describe it in a few words, please.", "Where is the square?"]


def resolve_modality(family: str, modality: str | None, modalities: tuple[str, ...]) -> str:
    """``modality``, or the family's first when ``None``; ``ValueError`` naming the allowed ones otherwise."""
    modality = modality or modalities[0]
    if modality not in modalities:
        raise ValueError(f"{family} has no modality {modality!r}; it accepts {', '.join(modalities)}")
    return modality


def chat_prompts(processor: Any, modality: str, batch_size: int) -> list[str]:
    """One user turn per row, ``[<modality>] + question``, rendered by the processor's chat template."""
    prompts = []
    for row in range(batch_size):
        content = [{"type": modality}, {"type": "text", "text": QUESTIONS[row % len(QUESTIONS)]}]
        prompts.append(processor.apply_chat_template([{"role": "user", "content": content}],
                                                     add_generation_prompt=True, tokenize=False))
    return prompts
