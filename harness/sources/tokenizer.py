"""A GGUF model's own tokenizer, rebuilt with the ``tokenizers`` package from the file's vocabulary and merges.

Only byte-level BPE (``tokenizer.ggml.model == "gpt2"``) is built: the kind SmolLM2 and most llama-style
models use. ``tokenizer.ggml.pre`` picks the pre-tokenizer as llama.cpp does ("smollm" splits digits).
"""

from __future__ import annotations

from harness.core.errors import InputError

PRE_TOKENIZERS = ("gpt2", "default", "smollm")
CONTROL = 3  # llama.cpp's token type of control tokens (<|im_start|>, ...)


def build_tokenizer(tokens: list[str], merges: list[str], model: str = "gpt2", pre: str = "default",
                    token_types: list[int] | None = None):
    """A ``tokenizers.Tokenizer`` with no added BOS/EOS: text in, the model's token ids out."""
    if model != "gpt2":
        raise InputError(f"tokenizer model {model!r} of the GGUF file is not byte-level BPE; "
                         "hint: use a model whose tokenizer.ggml.model is 'gpt2' (SmolLM2, Llama 3, ...)")
    if pre not in PRE_TOKENIZERS:
        raise InputError(f"pre-tokenizer {pre!r} of the GGUF file is not one of {', '.join(PRE_TOKENIZERS)}; "
                         "hint: use SmolLM2 (--inputs smollm2)")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab: dict[str, int] = {}
    for i, token in enumerate(tokens):
        vocab.setdefault(token, i)
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    if token_types is not None:
        control = [t for t, kind in zip(tokens, token_types) if kind == CONTROL]
        if control:
            tokenizer.add_special_tokens(control)
    return tokenizer


def encode_prefix(tokenizer, text: str, n: int, margin: int = 16) -> list[int] | None:
    """The first ``n`` token ids of ``text`` without encoding all of it: a prefix of the text, doubled until
    it yields ``n + margin`` tokens (a cut only changes the last few tokens). None if the text is too short."""
    chars = max(64, 8 * n)
    while True:
        ids = tokenizer.encode(text[:chars], add_special_tokens=False).ids
        if len(ids) >= n + margin or chars >= len(text):
            return ids[:n] if len(ids) >= n else None
        chars *= 2
