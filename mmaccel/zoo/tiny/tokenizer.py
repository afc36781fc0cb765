"""Tokenizers built in code, so models get real tokenization with no download: byte-level with no merges (the tiny
models), or byte-level BPE trained on a given corpus (the shapes-world reference models)."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast


def build_byte_tokenizer(
    *,
    bos_token: str | None = None,
    eos_token: str = "</s>",
    pad_token: str = "<pad>",
    unk_token: str | None = None,
    extra_special_tokens: dict[str, str] | None = None,
    additional_special_tokens: list[str] | None = None,
    chat_template: str | None = None,
    padding_side: str = "left",
    corpus: Iterable[str] | None = None,
    vocab_size: int = 0,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer plus the given special tokens: with no merges (every byte is a token), or, given a
    ``corpus``, with merges trained on it up to ``vocab_size`` (deterministic for the same corpus).

    ``extra_special_tokens`` maps attribute names to tokens (``{"image_token": "<image>"}`` gives
    ``tokenizer.image_token`` and ``tokenizer.image_token_id``), as the families' processors expect.
    ``additional_special_tokens`` are further special tokens without an attribute (chat markers etc.).
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    if corpus is not None:
        backend.model = models.BPE()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False)
        backend.train_from_iterator(corpus, trainer)
    named = {"eos_token": eos_token, "pad_token": pad_token}
    if bos_token is not None:
        named["bos_token"] = bos_token
    if unk_token is not None:
        named["unk_token"] = unk_token
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        extra_special_tokens=dict(extra_special_tokens or {}),
        padding_side=padding_side,
        **named,
    )
    if additional_special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(additional_special_tokens)})
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer
