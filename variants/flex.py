"""flex: FlexAttention (torch.nn.attention.flex_attention) compiled with torch.compile.

Global and local patterns, causal or not, through block masks. ``prepare`` builds the block mask and
triggers compilation for the case's shape so that nothing timed includes compilation; the sweep
reports that cost on its own.
"""

from __future__ import annotations

import torch

from harness.case import Case
from harness.patterns import Pattern
from harness.registry import Variant, register


def _mask_mod(pattern: Pattern):
    w = pattern.window
    if pattern.kind == "global":
        return lambda b, h, qi, kv: qi >= kv
    if pattern.causal:
        return lambda b, h, qi, kv: (qi >= kv) & (qi - kv <= w)
    return lambda b, h, qi, kv: (qi - kv <= w) & (kv - qi <= w)


@register
class Flex(Variant):
    name = "flex"
    description = "FlexAttention under torch.compile, block masks for causal and local"
    patterns = ("global", "local")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._compiled = None
        self._block_masks: dict[tuple, object] = {}

    def not_supported_reasons(self, case: Case) -> list[str]:
        reasons = super().not_supported_reasons(case)
        try:
            import torch.nn.attention.flex_attention  # noqa: F401
        except ImportError as exc:
            reasons.append(f"torch {torch.__version__} has no flex_attention: {exc}")
        if case.device == "cpu" and case.pass_ == "fwd_bwd":
            # torch's own check (flex_attention._validate_device) refuses this; say so before trying
            reasons.append("pass=fwd_bwd: FlexAttention does not support backward on CPU "
                           f"(torch {torch.__version__}); use device=cuda or pass=fwd")
        return reasons

    def _fn(self):
        if self._compiled is None:
            from torch.nn.attention.flex_attention import flex_attention

            self._compiled = torch.compile(flex_attention, dynamic=False)
        return self._compiled

    def _block_mask(self, pattern: Pattern, n: int, device: torch.device):
        if pattern.kind == "global" and not pattern.causal:
            return None
        key = (pattern, n, str(device))
        if key not in self._block_masks:
            from torch.nn.attention.flex_attention import create_block_mask

            self._block_masks[key] = create_block_mask(_mask_mod(pattern), None, None, n, n, device=device)
        return self._block_masks[key]

    def prepare(self, case: Case) -> None:
        """Build the block mask and compile for this shape and grad mode (forward and, if asked, backward)."""
        backward = case.pass_ == "fwd_bwd"
        q = torch.randn(case.shape, dtype=case.torch_dtype, device=case.device, requires_grad=backward)
        with torch.set_grad_enabled(backward):
            out = self.forward(q, q, q, case.pattern_obj)
        if backward:
            out.sum().backward()

    def forward(self, q, k, v, pattern: Pattern) -> torch.Tensor:
        block_mask = self._block_mask(pattern, q.shape[-2], q.device)
        # Each shape, mask and grad mode is its own compiled graph. Past dynamo's default limit of 8,
        # flex_attention silently falls back to an unfused eager path that materializes N x N scores,
        # which would be timed as if it were FlexAttention: raise the limit, and fail loudly if hit.
        with torch._dynamo.config.patch(recompile_limit=512, accumulated_recompile_limit=4096,
                                        fail_on_recompile_limit_hit=True):
            return self._fn()(q, k, v, block_mask=block_mask)
