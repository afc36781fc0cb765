"""A smaller model of the target's family as the drafter, seeing the prompt's media as the target does.

transformers' own assisted generation hands an assistant model the token ids alone, so a VLM assistant drafts
without the image. :class:`DraftModelCandidates` gives the drafter the media inputs of the ``generate`` call
(pixels, grids, audio features: the drafter's own vision tower encodes them) with the prompt, then drafts greedily
from its own cache:

- each round it keeps the longest prefix of its cache that the verified sequence still starts with (drafts the
  target accepted stay, the rest is cropped) and reads the tokens after it, then feeds its own guesses;
- positions follow ``generate``'s (:mod:`mmaccel.positions`): M-RoPE drafters get their 3-D prompt positions and
  their own offset after it;
- family members can pad their vocabularies differently (Qwen2-VL 2B and 7B: 151,936 and 152,064 rows): guesses
  are read from the ids both models have, media placeholders excluded (the target would read one as media).

The draft is a proposal only: the target's verification keeps the output exactly its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache

from ..positions import continuation_position_ids, rope_offset_holders
from .candidates import DraftCandidates
from .stats import AcceptanceStats

#: The folder inside a model's own folder where ``spec="draft_model"`` finds the drafter when none is named
#: (``python -m mmaccel.spec.train_drafter --out MODEL_FOLDER/drafter`` puts one there).
DRAFTER_FOLDER = "drafter"

#: ``generate`` keyword arguments that are not media inputs (the drafter builds its own).
_NOT_MEDIA = ("input_ids", "attention_mask", "position_ids", "cache", "past_key_values", "use_cache",
              "cache_position", "logits_to_keep")


def media_inputs(generate_kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a ``generate`` call's keyword arguments that describe its media (pixels, grids, audio
    features, per-token media types: everything but the ids, mask, positions and cache)."""
    return {k: v for k, v in generate_kwargs.items() if isinstance(v, torch.Tensor) and k not in _NOT_MEDIA}


def default_drafter(model: Any) -> str:
    """The folder of the drafter saved inside ``model``'s own folder (:data:`DRAFTER_FOLDER`), or ``""`` if the
    model was not loaded from a folder that holds one."""
    name = getattr(model.config, "_name_or_path", "")
    folder = Path(name) / DRAFTER_FOLDER if name else None
    return str(folder) if folder is not None and (folder / "config.json").is_file() else ""


class DraftModelCandidates(DraftCandidates):
    """Drafts up to ``num_tokens`` tokens per step with ``drafter`` for assisted decoding (module docstring).
    ``media`` are the call's media inputs (:func:`media_inputs`), ``prompt_mask`` its attention mask."""

    def __init__(self, drafter: Any, media: dict[str, torch.Tensor], prompt_mask: torch.Tensor | None,
                 vocab_size: int, media_token_ids: set[int], num_tokens: int, eos_token_ids: Any, max_length: int,
                 stats: AcceptanceStats):
        self.drafter, self.media, self.prompt_mask = drafter, media, prompt_mask
        self.media_token_ids = sorted(i for i in media_token_ids if i < vocab_size)
        self.vocab_size, self.num_tokens, self.eos_token_ids = vocab_size, num_tokens, eos_token_ids
        self.max_length, self.stats = max_length, stats
        self.cache = DynamicCache(config=drafter.config.get_text_config())
        self.read = torch.zeros((1, 0), dtype=torch.long)  # the tokens the drafter's cache holds
        self.offset_holders = rope_offset_holders(drafter)  # an M-RoPE drafter's modules with ``rope_deltas``
        self._drafted = 0

    @torch.no_grad()
    def get_candidates(self, input_ids: torch.LongTensor, **kwargs: Any) -> tuple[torch.LongTensor, None]:
        """``input_ids`` and the drafter's greedy continuation of it."""
        length = input_ids.shape[1]
        room = min(self.num_tokens, self.max_length - length - 1)
        self._drafted = 0
        if room <= 0:
            return input_ids, None
        self._keep(self._common_prefix(input_ids))
        logits = self._read(input_ids[:, self.read.shape[1]:])
        tokens = []
        for step in range(room):
            guesses = logits[:, -1, :self.vocab_size].float()
            guesses[:, self.media_token_ids] = float("-inf")
            token = guesses.argmax(-1, keepdim=True)
            tokens.append(token)
            if self.eos_token_ids is not None and bool(torch.isin(token, self.eos_token_ids.to(token.device))):
                break
            if step + 1 < room:
                logits = self._read(token)
        draft = torch.cat(tokens, dim=1)
        self._drafted = draft.shape[1]
        return torch.cat([input_ids, draft], dim=1), None

    def _common_prefix(self, input_ids: torch.Tensor) -> int:
        """How many of the cached tokens the sequence still starts with, leaving at least one token to read."""
        count = min(self.read.shape[1], input_ids.shape[1] - 1)
        same = (self.read[:, :count].to(input_ids.device) == input_ids[:, :count])[0]
        return count if bool(same.all()) else int(same.long().argmin())

    def _keep(self, length: int) -> None:
        extra = self.cache.get_seq_length() - length
        if extra > 0:
            self.cache.crop(-extra)
        self.read = self.read[:, :length]

    def _read(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` after the cache (the prompt with its media, the first time); returns the last logits."""
        total = self.read.shape[1] + tokens.shape[1]
        mask = tokens.new_ones((1, total))
        if self.prompt_mask is not None:
            given = self.prompt_mask[:, :total].to(mask.dtype)
            mask[:, :given.shape[1]] = given
        inputs: dict[str, Any] = {"input_ids": tokens, "attention_mask": mask}
        first = self.read.shape[1] == 0
        if first:
            inputs.update(self.media)
        holders = self.offset_holders
        offset = None if first else next((m.rope_deltas for m in holders if m.rope_deltas is not None), None)
        positions = continuation_position_ids(mask, tokens.shape[1], bool(holders), offset)
        if positions is not None:
            inputs["position_ids"] = positions
        try:
            out = self.drafter(**inputs, cache=self.cache, use_cache=True, logits_to_keep=1)
        except (ValueError, RuntimeError) as err:
            if not first:
                raise
            raise ValueError(f"the drafter {type(self.drafter).__name__} cannot read the prompt's media as the "
                             f"target lays them out ({err}); a drafter must be of the target's family with the same "
                             f"media token layout") from err
        self.read = torch.cat([self.read.to(tokens.device), tokens], dim=1)
        return out.logits
