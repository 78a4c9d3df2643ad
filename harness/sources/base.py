"""What every source of attention inputs is: the ``Source`` record, its checks and the slicing they share.

A source holds captured (B, H, N, D) tensors per layer and hands out their first ``n`` positions; the
``random`` source holds none (``harness.bench.inputs.make_qkv`` builds random inputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.core.errors import InputError

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True, eq=False)
class Source:
    """Attention inputs of one kind. The public fields never change; ``_state`` holds what is loaded lazily."""

    kind: str  # "random" | "smollm2" | "file"
    id: str  # what every row records in its `inputs` column
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    max_len: int | None = None  # positions available; None: unbounded (random)
    layers: tuple[int, ...] = ()
    _state: dict = field(default_factory=dict, repr=False, compare=False)

    def qkv(self, layer: int, n: int, dtype: torch.dtype, device="cpu",
            batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, H, n, D), k and v (B, H_kv, n, D): the first ``n`` positions of captured ``layer``."""
        raise InputError(f"inputs {self.id!r} hold no captured tensors; "
                         "hint: random inputs come from harness.bench.inputs.make_qkv")

    def meta(self) -> dict:
        """JSON-ready provenance for run.json."""
        return {"kind": self.kind, "id": self.id, "layers": list(self.layers)}

    def perplexity(self, attention=None, n: int | None = None) -> float:
        raise InputError(f"inputs {self.id!r} have no language model to measure a perplexity with; "
                         "hint: use --inputs smollm2")

    def _check_request(self, layer: int, n: int, dtype: torch.dtype, batch: int | None) -> None:
        """One-line InputErrors for a layer not captured, a length past ``max_len``, a bad dtype or batch."""
        if layer not in self.layers:
            raise InputError(f"layer {layer!r} was not captured by inputs {self.id!r} (captured: "
                             f"{', '.join(map(str, self.layers))}); hint: pass it in load_source(..., layers=...)")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or (self.max_len is not None and n > self.max_len):
            raise InputError(f"sequence length {n!r} is outside 1..{self.max_len} that inputs {self.id!r} hold; "
                             f"hint: use N <= {self.max_len} or a larger max_len")
        if dtype not in SUPPORTED_DTYPES:
            raise InputError(f"dtype {dtype} is not supported by inputs {self.id!r}; "
                             "hint: float16, bfloat16 or float32")
        if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
            raise InputError(f"batch {batch!r} is not a positive integer; hint: batch=1 or more, or None")


def slice_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n: int, dtype: torch.dtype, device,
              batch: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``n`` positions of stored (B, H, N, D) tensors as new contiguous tensors of ``dtype`` on
    ``device``. ``batch``: the stored batch's first ``batch`` rows, repeated when it asks for more."""
    out = []
    for t in (q, k, v):
        t = t[:, :, :n]  # (B, H, n, D)
        if batch is not None:
            stored = t.shape[0]
            t = t[:batch] if batch <= stored else t.repeat((-(-batch // stored), 1, 1, 1))[:batch]
        out.append(t.to(device=device, dtype=dtype, copy=True).contiguous())
    return out[0], out[1], out[2]
