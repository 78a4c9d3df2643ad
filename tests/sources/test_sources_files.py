"""A user's q/k/v file (.safetensors, .pt), the random source and load_source's dispatch."""

from __future__ import annotations

import hashlib

import pytest
import torch

from harness.core.errors import InputError
from harness.sources import Source, load_source


def qkv(b=2, h=4, h_kv=2, n=16, d=8, dtype=torch.float16):
    g = torch.Generator().manual_seed(0)
    return {"q": torch.randn(b, h, n, d, generator=g).to(dtype), "k": torch.randn(b, h_kv, n, d, generator=g).to(dtype),
            "v": torch.randn(b, h_kv, n, d, generator=g).to(dtype)}


def save(path, tensors):
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        torch.save(tensors, path)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_round_trip(tmp_path, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    tensors = qkv()
    path = save(tmp_path / f"qkv{suffix}", tensors)
    source = load_source(str(path))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (source.kind, source.id, source.layers) == ("file", f"file:{sha[:12]}", (0,))
    assert (source.heads, source.kv_heads, source.head_dim, source.max_len) == (4, 2, 8, 16)
    q, k, v = source.qkv(0, 16, torch.float16)
    assert torch.equal(q, tensors["q"]) and torch.equal(k, tensors["k"]) and torch.equal(v, tensors["v"])
    q, k, v = source.qkv(0, 5, torch.float32, batch=3)
    assert q.shape == (3, 4, 5, 8) and k.shape == v.shape == (3, 2, 5, 8) and q.dtype == torch.float32
    assert q.is_contiguous() and torch.equal(q[2], tensors["q"][0, :, :5].float())  # batch 3 of 2: repeated
    meta = source.meta()
    assert meta["sha256"] == sha and meta["tokens"] == 16 and meta["kind"] == "file" and meta["dtype"] == "float16"
    q[0, 0, 0, 0] = 99.0  # the caller's copy: the source's tensors are not changed
    assert torch.equal(source.qkv(0, 16, torch.float16)[0], tensors["q"])


def test_max_len_keeps_the_first_positions(tmp_path):
    path = save(tmp_path / "qkv.pt", qkv())
    source = load_source(str(path), max_len=8)
    assert source.max_len == 8 and source.qkv(0, 8, torch.float16)[0].shape[2] == 8
    with pytest.raises(InputError, match="sequence length 9 is outside 1..8"):
        source.qkv(0, 9, torch.float16)
    with pytest.raises(InputError, match="max_len 17 is outside 1..16"):
        load_source(str(path), max_len=17)
    with pytest.raises(InputError, match=r"layers \(1,\) asked of inputs file"):
        load_source(str(path), layers=(1,))
    with pytest.raises(InputError, match="have no language model"):
        source.perplexity()


def bad_inputs():
    t = qkv()
    return {
        "missing v": ({"q": t["q"], "k": t["k"]}, r"tensor 'v' is missing"),
        "non-tensor": ({**t, "k": [1.0, 2.0]}, r"'k' .* is a list, not a tensor"),
        "rank 3": ({**t, "q": t["q"][0]}, r"'q' .* has shape \(4, 16, 8\) \(rank 3\)"),
        "k/v mismatch": ({**t, "v": t["v"][:, :, :8]}, r"k \(2, 2, 16, 8\) and v \(2, 2, 8, 8\) differ"),
        "q/k length": ({**t, "q": t["q"][:, :, :8]}, r"q \(2, 4, 8, 8\) and k \(2, 2, 16, 8\) differ"),
        "heads not divisible": ({**t, "k": t["k"][:, :1].repeat(1, 3, 1, 1), "v": t["v"][:, :1].repeat(1, 3, 1, 1)},
                                r"q's 4 heads are not a multiple of k's 3 heads"),
        "int dtype": ({**t, "v": t["v"].to(torch.int32)}, r"'v' .* has dtype int32"),
    }


@pytest.mark.parametrize("name", list(bad_inputs()))
def test_bad_pt_file_is_a_one_line_input_error(tmp_path, name):
    tensors, match = bad_inputs()[name]
    path = save(tmp_path / "bad.pt", tensors)
    with pytest.raises(InputError, match=match) as exc:
        load_source(str(path))
    assert "\n" not in str(exc.value) and str(path) in str(exc.value) and "hint:" in str(exc.value)


@pytest.mark.parametrize("name", [n for n in bad_inputs() if n != "non-tensor"])
def test_bad_safetensors_file_is_a_one_line_input_error(tmp_path, name):
    pytest.importorskip("safetensors")
    tensors, match = bad_inputs()[name]
    path = save(tmp_path / "bad.safetensors", {k: t.contiguous() for k, t in tensors.items()})
    with pytest.raises(InputError, match=match) as exc:
        load_source(str(path))
    assert "\n" not in str(exc.value) and "hint:" in str(exc.value)


@pytest.mark.parametrize("content, suffix, match", [
    (None, ".safetensors", "does not exist"),
    (b"not a file of tensors", ".pt", "could not be loaded with torch.load"),
    (b"not a file of tensors", ".safetensors", "is not a readable safetensors file"),
    (b"", ".txt", "is neither 'random', 'smollm2' nor"),
])
def test_unreadable_files(tmp_path, content, suffix, match):
    path = tmp_path / f"x{suffix}"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=match) as exc:
        load_source(str(path))
    assert "\n" not in str(exc.value) and "hint:" in str(exc.value)


def test_a_pt_file_that_is_not_a_dict(tmp_path):
    path = tmp_path / "tuple.pt"
    torch.save(tuple(qkv().values()), path)
    with pytest.raises(InputError, match="holds a tuple, not a dict of tensors"):
        load_source(str(path))


def test_random_source_is_trivial():
    source = load_source("random")
    assert isinstance(source, Source)
    assert (source.kind, source.id, source.layers, source.max_len) == ("random", "random", (), None)
    assert source.meta() == {"kind": "random", "id": "random", "layers": []}
    with pytest.raises(InputError, match="make_qkv"):
        source.qkv(0, 8, torch.float32)
    with pytest.raises(InputError):
        load_source("random", layers=(0,))
