"""What the tiny family modules share: the language model's size, sample prompts and synthetic media per row."""

from __future__ import annotations

from typing import Any

from .media import make_image, make_video

#: Size of every tiny language model: 2 layers, 4 query heads sharing 2 key/value heads (GQA), head_dim 16.
TINY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 2048}

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


def row_media(modality: str, batch_size: int, seed: int, image_sizes: list[tuple[int, int]],
              video_shapes: list[tuple[int, int, int]]) -> list[Any]:
    """One synthetic image ``(width, height)`` or video ``(frames, width, height)`` per row, sizes cycling."""
    if modality == "image":
        return [make_image(*image_sizes[row % len(image_sizes)], seed=seed + row) for row in range(batch_size)]
    return [make_video(*video_shapes[row % len(video_shapes)], seed=seed + row) for row in range(batch_size)]


def video_metadata(videos: list[Any], fps: float) -> list[dict[str, Any]]:
    """``video_metadata`` for synthetic ``(frames, height, width, 3)`` clips sampled at ``fps``, every frame kept."""
    return [{"total_num_frames": len(v), "fps": fps, "width": v.shape[2], "height": v.shape[1],
             "frames_indices": list(range(len(v)))} for v in videos]
