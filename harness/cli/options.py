"""The `attnbench` command line. Every command has --help; bad input exits 2 with a one-line message.
"""

from __future__ import annotations

import argparse

from harness.core.errors import InputError


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _known_variants(names: list[str] | None) -> list[str] | None:
    from harness.core.registry import discover  # lazy: start-up

    if names is None:
        return None
    registry = discover()
    for name in names:
        if name not in registry:
            raise InputError(f"unknown variant {name!r}; valid variants: {', '.join(registry)}")
    return names


# ---- sweep ------------------------------------------------------------------------------------
_INT_AXES = {"seq_lens": "--seq-lens", "heads": "--heads", "batch": "--batch", "head_dims": "--head-dims"}


_STR_AXES = {"variants": "--variants", "patterns": "--patterns", "dtypes": "--dtypes", "passes": "--passes"}


def _ints(text: str, flag: str) -> list[int]:
    out = []
    for item in _split(text) or []:
        try:
            out.append(int(item))
        except ValueError:
            raise InputError(f"{flag} takes comma-separated integers, got {item!r}; hint: {flag} 512,1024") from None
    return out


def sweep_config_from_args(args: argparse.Namespace, default_preset: str = "quick"):
    """Preset or --config TOML, then every axis override from the command line, into a frozen config."""
    from harness.run.config import build_config, load_toml  # lazy: start-up

    if args.preset and args.config:
        raise InputError("give --preset or --config, not both")
    data = load_toml(args.config, False) if args.config else load_toml(args.preset or default_preset, True)
    for key, flag in _INT_AXES.items():
        value = getattr(args, key)
        if value:
            data[key] = _ints(value, flag)
    for key, flag in _STR_AXES.items():
        value = getattr(args, key)
        if value:
            data[key] = _split(value)
    if args.causal:
        data["causal"] = {"both": [False, True], "yes": [True], "no": [False]}[args.causal]
    for key in ("device", "window", "budget_s", "timeout_s"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    if args.segment is not None:
        data["segment"] = args.segment if args.segment == "sqrt" else _ints(args.segment, "--segment")[0]
    if args.isolate:
        data["isolate"] = True
    return build_config(data)


def _sweep_has_overrides(args) -> bool:
    keys = [*_INT_AXES, *_STR_AXES, "causal", "device", "window", "budget_s", "timeout_s", "segment", "preset", "config"]
    return any(getattr(args, k) for k in keys) or args.isolate


def add_sweep_options(p: argparse.ArgumentParser, default_preset: str = "quick") -> None:
    p.add_argument("--preset", help=f"a preset shipped with attnbench: quick, default, long, gpu (default: {default_preset})")
    p.add_argument("--config", help="a sweep TOML file (same keys as the presets in harness/run/presets/)")
    p.add_argument("--variants", help="comma-separated variant names, or all")
    p.add_argument("--patterns", help="comma-separated: global,local,hierarchical")
    p.add_argument("--causal", choices=["no", "yes", "both"], help="causal masking: no, yes or both")
    p.add_argument("--seq-lens", dest="seq_lens", help="comma-separated sequence lengths, e.g. 512,1024")
    p.add_argument("--heads", help="comma-separated head counts")
    p.add_argument("--batch", help="comma-separated batch sizes")
    p.add_argument("--head-dims", dest="head_dims", help="comma-separated head dims")
    p.add_argument("--dtypes", help="comma-separated: float32,float16,bfloat16")
    p.add_argument("--device", help="cpu, cuda or auto")
    p.add_argument("--passes", help="comma-separated: fwd,fwd_bwd")
    p.add_argument("--window", type=int, help="window radius w of the local pattern")
    p.add_argument("--segment", help="segment length s of the hierarchical pattern, or sqrt (round(sqrt(N)))")
    p.add_argument("--budget-s", dest="budget_s", type=float, help="seconds of timing per case (default from preset)")
    p.add_argument("--timeout-s", dest="timeout_s", type=float, help="upper bound on one case, in seconds")
    p.add_argument("--isolate", action="store_true", help="run each case in a fresh subprocess")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
