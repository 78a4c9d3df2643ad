"""hierarchical: blocked two-level attention, O(N*s + N*N/s); never builds an N x N tensor.

Each query scores the keys of its own segment (level one) and the G segment summaries (level two),
both normalized in one softmax. Segments are processed ``seg_block`` at a time so the working set
stays small whatever N is. Two paths, chosen by ``kernel``:

* ``flash`` (``auto`` on CPU): torch's fused CPU flash-attention kernel (``variants._flash``), two
  calls per block of segments, with the segments as the kernel's head dimension (strided views, no
  copy): own-segment keys (the kernel's causal flag for causal), and the summaries (a stride-0 view
  shared by the block's segments, with a (1, G, 1, G) additive mask: every other segment, or only
  earlier ones when causal). The two results are merged by their row log-sum-exp. The backward is a
  custom autograd.Function: the kernel's backward on both calls with the saved output and
  log-sum-exp, the summaries' gradients spread back over their segments (the mean's gradient).
* ``torch`` (``auto`` on every other device, CUDA included): (B, H, g, seg_block, s, s) and
  (B, H, g, seg_block, s, G) score blocks with a shared row maximum and denominator; autograd
  differentiates it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.core.case import Case
from harness.core.patterns import Pattern, segment_means
from harness.core.registry import Variant, register
from variants._flash import additive, check_kernel, flash_bwd, flash_fwd, flash_kernel_reasons, use_flash


def _allowed(pattern: Pattern, n: int, device) -> dict[str, torch.Tensor]:
    """Per-shape masks: own-segment slots (G, 1|s, s) and summary slots (G, 1, G) a query may use."""
    s = pattern.segment
    g_all = math.ceil(n / s)
    r = torch.arange(s, device=device)
    seg = torch.arange(g_all, device=device)
    key_valid = (seg[:, None] * s + r[None, :]) < n  # (G, s): padded keys of the last segment
    own_ok = key_valid[:, None, :]  # (G, 1, s_k)
    if pattern.causal:
        own_ok = own_ok & (r[None, :, None] >= r[None, None, :])  # (G, s_q, s_k)
        sum_ok = seg[None, :] < seg[:, None]  # (G_q, G_k): only earlier segments
    else:
        sum_ok = seg[None, :] != seg[:, None]  # (G_q, G_k): every other segment
    return {"own_ok": own_ok, "sum_ok": sum_ok[:, None, :]}  # sum_ok: (G, 1, G)


def _summary_mask(pattern: Pattern, n: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(1, G, 1, G) additive: a query of segment gq may use summary g' iff g' != gq (causal: g' < gq)."""
    seg = torch.arange(pattern.num_segments(n), device=device)
    ok = (seg[None, :] < seg[:, None]) if pattern.causal else (seg[None, :] != seg[:, None])  # (Gq, Gk)
    return additive(ok, dtype)[None, :, None, :]  # (1, G, 1, G)


def _groups(n: int, s: int, step: int):
    """Yield (g0, nseg, length): blocks of ``step`` full segments, then the last, shorter one if any."""
    full = n // s
    for g0 in range(0, full, step):
        yield g0, min(step, full - g0), s
    if n % s:
        yield full, 1, n % s


def _slots(b: int, h: int, h_kv: int):
    """(batch, first query head, query heads, kv head or None): one kernel call's heads. Multi-head: all
    heads at once (kv head None: the same heads); grouped: one kv head and its group of query heads."""
    g = h // h_kv
    if g == 1:
        return [(i, 0, h, None) for i in range(b)]
    return [(i, j * g, g, j) for i in range(b) for j in range(h_kv)]


def _seg_view(x: torch.Tensor, i: int, h0: int, nh: int, row0: int, nseg: int, length: int,
              shared_head: int | None = None) -> torch.Tensor:
    """(nh, nseg, length, D) view of x (B, H', N', D) at batch i, rows row0.. in segments of ``length``
    (consecutive rows: segment stride length * row stride). ``shared_head``: that one head, stride 0
    over nh."""
    sb, sh, sn, sd = x.stride()
    head, head_stride = (h0, sh) if shared_head is None else (shared_head, 0)
    return x.as_strided((nh, nseg, length, x.shape[3]), (head_stride, length * sn, sn, sd),
                        x.storage_offset() + i * sb + head * sh + row0 * sn)


def _sum_view(x: torch.Tensor, i: int, h0: int, nh: int, nseg: int, shared_head: int | None) -> torch.Tensor:
    """(nh, nseg, G, D) view of the summaries x (B, Hkv, G, D), stride 0 over the nseg query segments."""
    sb, sh, sg, sd = x.stride()
    head, head_stride = (h0, sh) if shared_head is None else (shared_head, 0)
    return x.as_strided((nh, nseg, x.shape[2], x.shape[3]), (head_stride, 0, sg, sd),
                        x.storage_offset() + i * sb + head * sh)


class _FlashHierarchical(torch.autograd.Function):
    """The flash path: q (B, H, N, D), k and v (B, Hkv, N, D), smask (1, G, 1, G) from ``_summary_mask``."""

    @staticmethod
    def forward(ctx, q, k, v, pattern: Pattern, step: int, smask: torch.Tensor):
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))  # the kernel's one demand
        b, h, n, d = q.shape
        h_kv, s = k.shape[1], pattern.segment
        scale = 1.0 / math.sqrt(d)
        ks, vs = segment_means(k, s), segment_means(v, s)  # (B, Hkv, G, D)
        two_levels = ks.shape[2] > 1 or pattern.causal  # one segment, not causal: no summary is allowed
        # _groups' segments cover [0, N), so every row of out and lse is written below.
        out = torch.empty(b, h, n, d, dtype=q.dtype, device=q.device)  # (B, H, N, D)
        lse = torch.empty(b, h, n, dtype=torch.float32, device=q.device)  # (B, H, N)
        for i, h0, nh, j in _slots(b, h, h_kv):
            for g0, nseg, length in _groups(n, s, step):
                row0 = g0 * s
                q4 = _seg_view(q, i, h0, nh, row0, nseg, length)  # (nh, nseg, length, D)
                o1, l1 = flash_fwd(q4, _seg_view(k, i, h0, nh, row0, nseg, length, j),
                                   _seg_view(v, i, h0, nh, row0, nseg, length, j), scale, None, pattern.causal)
                if two_levels:
                    o2, l2 = flash_fwd(q4, _sum_view(ks, i, h0, nh, nseg, j), _sum_view(vs, i, h0, nh, nseg, j),
                                       scale, smask[:, g0:g0 + nseg])
                    if pattern.causal and g0 == 0:  # segment 0 has no earlier summary: the kernel gave lse 0
                        l2[:, 0] = float("-inf")
                    l12 = torch.logaddexp(l1, l2)  # (nh, nseg, length); finite: own keys always allowed
                    o1 = o1.mul_((l1 - l12).exp_()[..., None]).add_(o2.mul_((l2 - l12).exp_()[..., None]))
                    l1 = l12
                rows = slice(row0, row0 + nseg * length)
                # one copy each, from the kernel's strided result into the rows' view (no reshape copy)
                out[i, h0:h0 + nh, rows].view(nh, nseg, length, d).copy_(o1)
                lse[i, h0:h0 + nh, rows].view(nh, nseg, length).copy_(l1)
        ctx.save_for_backward(q, k, v, out, lse, smask, ks, vs)
        ctx.pattern, ctx.step, ctx.two_levels = pattern, step, two_levels
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, smask, ks, vs = ctx.saved_tensors
        pattern, step = ctx.pattern, ctx.step
        b, h, n, d = q.shape
        h_kv, s, g_all = k.shape[1], pattern.segment, ks.shape[2]
        scale = 1.0 / math.sqrt(d)
        go = grad_out.contiguous()  # (B, H, N, D)
        dq = torch.empty_like(out)  # every row belongs to one group: written once below
        dk = torch.zeros(b, h_kv, n, d, dtype=torch.float32, device=q.device)
        dv = torch.zeros_like(dk)
        dks = torch.zeros(b, h_kv, g_all, d, dtype=torch.float32, device=q.device)  # summaries' gradients
        dvs = torch.zeros_like(dks)
        for i, h0, nh, j in _slots(b, h, h_kv):
            kv_heads = slice(h0, h0 + nh) if j is None else slice(j, j + 1)

            def per_kv_head(x, j=j):  # (nh, ...) -> the kv heads' share: summed over a group of query heads
                return x if j is None else x.sum(0, keepdim=True)
            for g0, nseg, length in _groups(n, s, step):
                row0 = g0 * s
                rows = slice(row0, row0 + nseg * length)
                view = lambda x: _seg_view(x, i, h0, nh, row0, nseg, length)  # noqa: E731
                go4, q4, o4 = view(go), view(q), view(out)  # (nh, nseg, length, D)
                l4 = lse[i, h0:h0 + nh, rows].view(nh, nseg, length)
                dq1, dk1, dv1 = flash_bwd(go4, q4, _seg_view(k, i, h0, nh, row0, nseg, length, j),
                                          _seg_view(v, i, h0, nh, row0, nseg, length, j), o4, l4, scale, None,
                                          pattern.causal)  # each (nh, nseg, length, D)
                dk[i, kv_heads, rows] += per_kv_head(dk1.reshape(nh, nseg * length, d))  # (nh | 1, rows, D)
                dv[i, kv_heads, rows] += per_kv_head(dv1.reshape(nh, nseg * length, d))
                if ctx.two_levels:
                    dq2, dk2, dv2 = flash_bwd(go4, q4, _sum_view(ks, i, h0, nh, nseg, j),
                                              _sum_view(vs, i, h0, nh, nseg, j), o4, l4, scale,
                                              smask[:, g0:g0 + nseg])  # dk2, dv2: (nh, nseg, G, D)
                    dq1 = dq1.add_(dq2)
                    dks[i, kv_heads] += per_kv_head(dk2.sum(1))  # (nh | 1, G, D): summed over the segments
                    dvs[i, kv_heads] += per_kv_head(dv2.sum(1))
                dq[i, h0:h0 + nh, rows] = dq1.reshape(nh, nseg * length, d)
        # A summary is the mean of its segment: its gradient spreads evenly over the segment's positions.
        full = n // s
        for grad, gsum in ((dk, dks), (dv, dvs)):
            grad[:, :, :full * s].view(b, h_kv, full, s, d).add_((gsum[:, :, :full] / s)[:, :, :, None])
            if n % s:
                grad[:, :, full * s:] += gsum[:, :, full:] / (n % s)
        return dq, dk.to(k.dtype), dv.to(v.dtype), None, None, None


@register
class Hierarchical(Variant):
    name = "hierarchical"
    description = "Blocked two-level attention: own-segment keys plus one mean summary per other segment"
    patterns = ("hierarchical",)
    gqa = True
    default_params = {"seg_block": 8, "kernel": "auto"}

    @classmethod
    def check_param(cls, key, value) -> None:
        if key == "kernel":
            check_kernel(cls.name, value)
        super().check_param(key, value)

    def not_supported_reasons(self, case: Case) -> list[str]:
        return super().not_supported_reasons(case) + flash_kernel_reasons(case.device, self.params["kernel"])

    def constants(self, case: Case) -> dict:
        if use_flash(torch.device(case.device), self.params["kernel"]):
            return {"smask": _summary_mask(case.pattern_obj, case.seq_len, case.torch_dtype, case.device)}
        return _allowed(case.pattern_obj, case.seq_len, case.device)

    def forward(self, q, k, v, pattern: Pattern, own_ok: torch.Tensor | None = None,
                sum_ok: torch.Tensor | None = None, smask: torch.Tensor | None = None) -> torch.Tensor:
        step = max(1, int(self.params["seg_block"]))
        if use_flash(q.device, self.params["kernel"]):
            if smask is None:
                smask = _summary_mask(pattern, q.shape[2], q.dtype, q.device)
            return _FlashHierarchical.apply(q, k, v, pattern, step, smask)
        return self._torch_forward(q, k, v, pattern, own_ok, sum_ok)

    def _torch_forward(self, q, k, v, pattern: Pattern, own_ok: torch.Tensor | None,
                       sum_ok: torch.Tensor | None) -> torch.Tensor:
        b, h, n, d = q.shape
        h_kv = k.shape[1]
        g = h // h_kv  # query heads per key/value head: a broadcast dimension, k and v are not copied
        s = pattern.segment
        g_all = math.ceil(n / s)
        pad = g_all * s - n
        scale = 1.0 / math.sqrt(d)
        if own_ok is None or sum_ok is None:
            own_ok, sum_ok = _allowed(pattern, n, q.device).values()
        qs = F.pad(q * scale, (0, 0, 0, pad)).reshape(b, h_kv, g, g_all, s, d)  # (B, Hkv, g, G, s, D), pre-scaled
        ks = F.pad(k, (0, 0, 0, pad)).reshape(b, h_kv, 1, g_all, s, d)  # (B, Hkv, 1, G, s, D)
        vs = F.pad(v, (0, 0, 0, pad)).reshape(b, h_kv, 1, g_all, s, d)  # (B, Hkv, 1, G, s, D)
        k_sum_t = segment_means(k, s).transpose(-1, -2)[:, :, None, None]  # (B, Hkv, 1, 1, D, G)
        v_sum = segment_means(v, s)[:, :, None, None]  # (B, Hkv, 1, 1, G, D)

        outs = []
        step = max(1, int(self.params["seg_block"]))
        for g0 in range(0, g_all, step):
            g1 = min(g_all, g0 + step)
            qb = qs[:, :, :, g0:g1]  # (B, Hkv, g, gb, s, D)
            own = qb @ ks[:, :, :, g0:g1].transpose(-1, -2)  # (B, Hkv, g, gb, s, s)
            summ = qb @ k_sum_t  # (B, Hkv, g, gb, s, G)
            neg = torch.finfo(own.dtype).min
            own = own.masked_fill(~own_ok[g0:g1], neg)
            summ = summ.masked_fill(~sum_ok[g0:g1], neg)
            m = torch.maximum(own.amax(dim=-1, keepdim=True), summ.amax(dim=-1, keepdim=True))  # (..., s, 1)
            e_own = (own - m).exp_()
            e_sum = (summ - m).exp_()
            denom = e_own.sum(dim=-1, keepdim=True) + e_sum.sum(dim=-1, keepdim=True)
            outs.append((e_own @ vs[:, :, :, g0:g1] + e_sum @ v_sum) / denom)  # (B, Hkv, g, gb, s, D)
        out = torch.cat(outs, dim=3) if len(outs) > 1 else outs[0]  # (B, Hkv, g, G, s, D)
        return out.reshape(b, h, g_all * s, d)[:, :, :n]  # (B, H, N, D)
