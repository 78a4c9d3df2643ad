"""A user's file of attention inputs: tensors ``q``, ``k``, ``v`` (B, H, N, D) in a .safetensors or .pt file.

k and v may have fewer heads than q (grouped-query: H % H_kv == 0). Every defect is one InputError,
raised here before anything runs.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import torch

from harness.core.errors import InputError
from harness.sources.base import SUPPORTED_DTYPES, Source, slice_qkv
from harness.sources.cache import file_sha256

SUFFIXES = (".safetensors", ".pt", ".pth")
NAMES = ("q", "k", "v")
HINT = ("hint: save a dict {'q': (B, H, N, D), 'k': (B, H_kv, N, D), 'v': (B, H_kv, N, D)} of float16, bfloat16 "
        "or float32 tensors with safetensors.torch.save_file or torch.save (docs/inputs.md)")


class FileSource(Source):
    def qkv(self, layer, n, dtype, device="cpu", batch=None):
        self._check_request(layer, n, dtype, batch)
        return slice_qkv(*self._state["qkv"], n, dtype, device, batch)

    def meta(self) -> dict:
        return {**super().meta(), "path": self._state["path"], "sha256": self._state["sha256"],
                "tokens": self.max_len, "batch": self._state["qkv"][0].shape[0],
                "dtype": str(self._state["qkv"][0].dtype).removeprefix("torch."), "heads": self.heads,
                "kv_heads": self.kv_heads, "head_dim": self.head_dim}


def load_file(spec: str, layers: tuple[int, ...] | None = None, max_len: int | None = None) -> FileSource:
    """The source of the file at ``spec``; ``max_len`` (default: the file's N) keeps its first positions."""
    path = Path(spec).expanduser()
    if path.suffix not in SUFFIXES:
        raise InputError(f"inputs {spec!r} is neither 'random', 'smollm2' nor a {'/'.join(SUFFIXES)} file; "
                         f"hint: --inputs random, --inputs smollm2 or --inputs PATH.safetensors")
    if not path.is_file():
        raise InputError(f"inputs file {str(path)!r} does not exist; hint: check the path (relative paths "
                         f"start at {str(Path.cwd())!r})")
    if layers is not None and tuple(layers) != (0,):
        raise InputError(f"layers {tuple(layers)!r} asked of inputs file {str(path)!r}, which holds one layer; "
                         "hint: layers=(0,) or None")
    tensors = _read(path)
    q, k, v = _validated(path, tensors)
    n = q.shape[2]
    if max_len is not None and (not isinstance(max_len, int) or isinstance(max_len, bool) or not 1 <= max_len <= n):
        raise InputError(f"max_len {max_len!r} is outside 1..{n}, the positions inputs file {str(path)!r} holds; "
                         f"hint: max_len <= {n} or None")
    sha = file_sha256(path)
    return FileSource(kind="file", id=f"file:{sha[:12]}", heads=q.shape[1], kv_heads=k.shape[1],
                      head_dim=q.shape[3], max_len=max_len or n, layers=(0,),
                      _state={"qkv": (q, k, v), "path": str(path.resolve()), "sha256": sha})


def _read(path: Path) -> dict:
    """The file's tensors by name: safetensors reads only q, k, v; a .pt file loads with weights_only."""
    if path.suffix == ".safetensors":
        if importlib.util.find_spec("safetensors") is None:
            raise InputError(f"inputs file {str(path)!r} needs the package safetensors (not installed); "
                             "hint: pip install safetensors, or make quality-setup")
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                keys = set(f.keys())
                return {name: f.get_tensor(name) for name in NAMES if name in keys}
        except (SafetensorError, OSError) as exc:
            raise InputError(f"inputs file {str(path)!r} is not a readable safetensors file "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); {HINT}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(f"inputs file {str(path)!r} could not be loaded with torch.load(weights_only=True) "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); {HINT}") from None
    if not isinstance(obj, dict):
        raise InputError(f"inputs file {str(path)!r} holds a {type(obj).__name__}, not a dict of tensors; {HINT}")
    return obj


def _validated(path: Path, tensors: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    where = f"in inputs file {str(path)!r}"
    missing = [name for name in NAMES if name not in tensors]
    if missing:
        found = ", ".join(sorted(map(str, tensors))) or "nothing"
        raise InputError(f"tensor {missing[0]!r} is missing {where} (found: {found}); {HINT}")
    for name in NAMES:
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{name!r} {where} is a {type(t).__name__}, not a tensor; {HINT}")
        if t.dim() != 4:
            raise InputError(f"{name!r} {where} has shape {tuple(t.shape)} (rank {t.dim()}), not (B, H, N, D); {HINT}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise InputError(f"{name!r} {where} has dtype {str(t.dtype).removeprefix('torch.')}; {HINT}")
        if t.numel() == 0:
            raise InputError(f"{name!r} {where} is empty (shape {tuple(t.shape)}); {HINT}")
    q, k, v = (tensors[name].contiguous() for name in NAMES)
    if k.shape != v.shape:
        raise InputError(f"k {tuple(k.shape)} and v {tuple(v.shape)} differ in shape {where}; {HINT}")
    (b, h, n, d), (bk, hk, nk, dk) = q.shape, k.shape
    if (b, n, d) != (bk, nk, dk):
        raise InputError(f"q {tuple(q.shape)} and k {tuple(k.shape)} differ in batch, length or head dim {where}; "
                         f"{HINT}")
    if h % hk:
        raise InputError(f"q's {h} heads are not a multiple of k's {hk} heads {where}; hint: grouped-query "
                         "inputs need H % H_kv == 0")
    return q, k, v
