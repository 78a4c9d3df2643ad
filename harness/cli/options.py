"""The `attnbench` command line. Every command has --help; bad input exits 2 with a one-line message.
"""

from __future__ import annotations

import argparse
import math

from harness.analysis.rounds import LONGER_ROUNDS, ROUND_BELOW_S
from harness.analysis.trust import SHORT_BELOW_S
from harness.bench.heap import ALLOCATORS
from harness.core.errors import InputError
from harness.run.budget import TRUST_BUDGET_FRACTION
from harness.run.presets import preset_names


def _split(text: str | None, flag: str = "") -> list[str] | None:
    """Comma-separated items. An empty string gives an empty list (which the config refuses for an axis
    that needs a value); an empty item among others (``64,,128``) is an InputError naming ``flag``."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")]
    if all(not t for t in items):
        return []
    if not all(items):
        example = _EXAMPLES.get(flag, "a,b")
        raise InputError(f"{flag or 'a list'} has an empty item in {text!r}; hint: {flag} {example} (no empty "
                         "items between commas)")
    return items


def _known_variants(names: list[str] | None) -> list[str] | None:
    from harness.core.registry import discover, unknown_variant  # lazy: start-up

    if names is None:
        return None
    registry = discover()
    if not names:
        raise InputError("--variants is empty; hint: --variants naive,chunked (or leave it out for all)")
    for name in names:
        if name not in registry:
            raise unknown_variant(name, registry)
    return list(dict.fromkeys(names))  # duplicates dropped, order kept


# ---- sweep ------------------------------------------------------------------------------------
def check_out_dir(out: str | None) -> None:
    """--out must be a folder that can be made and written (an existing file or /proc/x cannot)."""
    if out is None:
        return
    from pathlib import Path  # lazy: start-up

    path = Path(out)
    hint = "hint: --out results/my-run (a new or empty folder)"
    if not out.strip():
        raise InputError(f"--out is empty ({out!r}); {hint}")
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {out!r} is a file, not a folder; {hint}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".attnbench-write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise InputError(f"--out {out!r} cannot be written: {exc.strerror or exc}; {hint}") from None


_INT_AXES = {"seq_lens": "--seq-lens", "heads": "--heads", "kv_heads": "--kv-heads", "q_lens": "--q-lens",
             "kv_lens": "--kv-lens", "docs": "--docs", "threads": "--threads", "batch": "--batch", "head_dims": "--head-dims",
             "window": "--window", "sinks": "--sinks", "stride": "--stride", "globals": "--globals", "topk": "--topk",
             "layers": "--layers"}


_STR_AXES = {"variants": "--variants", "patterns": "--patterns", "dtypes": "--dtypes", "passes": "--passes"}
_EXAMPLES = {"--seq-lens": "512,1024", "--heads": "8,16", "--kv-heads": "2,8", "--q-lens": "1,16",
             "--kv-lens": "1024,4096", "--docs": "4,16", "--threads": "1,2", "--batch": "1,4", "--head-dims": "64,128",
             "--window": "32,128,512", "--segment": "16,sqrt", "--sinks": "4", "--stride": "2,4", "--globals": "4",
             "--topk": "32,64", "--layers": "0,15,29",
             "--variants": "naive,chunked", "--patterns": "global,local", "--dtypes": "float32,bfloat16",
             "--passes": "fwd,fwd_bwd"}


def _int_hint(flag: str, item: str) -> str:
    """A hint for an item of an integer axis that is not an integer, fitted to what was given."""
    try:
        number = float(item)
    except ValueError:
        number = None
    if number is not None and math.isfinite(number):
        return f"whole numbers only, e.g. {flag} {max(0 if flag == '--layers' else 1, round(number))}"
    if flag == "--window" and item == "sqrt":
        return "sqrt is a segment length (--segment 16,sqrt); the window is a number of positions, e.g. --window 128"
    return f"{flag} {_EXAMPLES[flag]}"


def _int_item(item: str, flag: str, what: str = "integers") -> int:
    try:
        return int(item)
    except ValueError:
        raise InputError(f"{flag} takes comma-separated {what}, got {item!r}; hint: {_int_hint(flag, item)}") from None


def _ints(text: str, flag: str) -> list[int]:
    return [_int_item(item, flag) for item in _split(text, flag) or []]


def _segments(text: str) -> list[int | str]:
    """--segment: comma-separated segment lengths of the hierarchical pattern, each an integer or sqrt."""
    return ["sqrt" if item.lower() == "sqrt" else _int_item(item, "--segment", "integers or sqrt")
            for item in _split(text, "--segment") or []]


def sweep_config_from_args(args: argparse.Namespace, default_preset: str = "quick", base: dict | None = None):
    """Preset or --config TOML (or ``base``: a resumed run's stored sweep, when neither is given), then
    every axis override from the command line, into a frozen config."""
    from harness.run.validate import build_config, load_toml  # lazy: start-up

    if args.preset and args.config:
        raise InputError("give --preset or --config, not both; hint: --config my.toml alone (start it from a copy "
                         "of a preset in harness/run/presets/)")
    if base is not None and not (args.preset or args.config):
        data = dict(base)
    else:
        data = load_toml(args.config, False) if args.config else load_toml(args.preset or default_preset, True)
    preset_keys = set() if args.config else set(data)  # what the user did not set: real inputs may reshape it
    for key, flag in _INT_AXES.items():
        value = getattr(args, key)
        if value is not None:
            data[key] = _ints(value, flag)
    for key, flag in _STR_AXES.items():
        value = getattr(args, key)
        if value is not None:
            data[key] = _split(value, flag)
    if args.causal:
        data["causal"] = {"both": [False, True], "yes": [True], "no": [False]}[args.causal]
    if args.inputs is not None:
        data["inputs"] = _split(args.inputs, "--inputs")
    for key in ("device", *EXECUTION_FLAGS):
        value = getattr(args, key, None)
        if value is not None:
            data[key] = value
    if args.segment is not None:
        data["segment"] = _segments(args.segment)
    if args.isolate:
        data["isolate"] = True
    if getattr(args, "all_cells", False):
        data["all_cells"] = True
    overridden = {k for k in data if k not in preset_keys or _given_on_command_line(args, k)}
    return build_config(data, explicit=overridden)


def _given_on_command_line(args, key: str) -> bool:
    return getattr(args, key, None) not in (None, False)


def grid_overrides(args) -> bool:
    """Whether the command line names any of the grid (which cases), not only how they run."""
    keys = [*_INT_AXES, *_STR_AXES, "causal", "device", "segment", "inputs", "preset", "config", "all_cells"]
    return any(getattr(args, k) for k in keys)


def execution_options(args) -> dict:
    """The execution keys the command line sets (what a resume may change)."""
    out = {k: getattr(args, k) for k in EXECUTION_FLAGS if getattr(args, k, None) is not None}
    if getattr(args, "isolate", False):
        out["isolate"] = True
    return out


def add_sweep_options(p: argparse.ArgumentParser, default_preset: str = "quick") -> None:
    p.add_argument("--preset", help=f"a preset shipped with attnbench: {', '.join(preset_names())} "
                                    f"(default: {default_preset})")
    p.add_argument("--config", help="a sweep TOML file (same keys as the presets in harness/run/presets/)")
    p.add_argument("--variants", help="comma-separated variant names, or all")
    p.add_argument("--patterns", help="comma-separated: global,local,sink,dilated,bigbird,hierarchical,document,topk")
    p.add_argument("--causal", choices=["no", "yes", "both"], help="causal masking: no, yes or both")
    p.add_argument("--seq-lens", dest="seq_lens", help="comma-separated sequence lengths of square cases, e.g. 512,1024")
    p.add_argument("--q-lens", dest="q_lens", help="comma-separated query lengths, at the end of the keys (decoding: 1)")
    p.add_argument("--kv-lens", dest="kv_lens", help="comma-separated key/value lengths (default: --seq-lens); "
                                                     "a decode sweep: --q-lens 1 --kv-lens 1024,4096,16384")
    p.add_argument("--kv-heads", dest="kv_heads", help="comma-separated key/value heads (grouped-query; default: "
                                                       "as many as --heads), e.g. --heads 32 --kv-heads 8")
    p.add_argument("--threads", help="comma-separated torch intra-op thread counts on CPU, one axis (default: all "
                                     "cores); --threads 1,2 measures each case both ways")
    p.add_argument("--docs", help="comma-separated documents per sequence for the document pattern (lengths from a "
                                  "fixed seed, recorded in each row), e.g. 4,16")
    p.add_argument("--heads", help="comma-separated head counts")
    p.add_argument("--batch", help="comma-separated batch sizes")
    p.add_argument("--head-dims", dest="head_dims", help="comma-separated head dims")
    p.add_argument("--dtypes", help="comma-separated: float32, float16, bfloat16, float64 (float64 is the "
                                    "reference's dtype; most variants report it unsupported), or auto")
    p.add_argument("--device", help="cpu, cuda or auto")
    p.add_argument("--passes", help="comma-separated: fwd,fwd_bwd")
    p.add_argument("--window", help="comma-separated window radii w of local, sink, dilated and bigbird, one axis, "
                                    "e.g. 32,128,512")
    p.add_argument("--segment", help="comma-separated segment lengths s of the hierarchical pattern, each an integer "
                                     "or sqrt (round(sqrt(N))), e.g. 16,sqrt")
    p.add_argument("--sinks", help="comma-separated counts of sink keys (the first keys every query attends) of the "
                                   "sink pattern, e.g. 4")
    p.add_argument("--stride", help="comma-separated strides d of the dilated pattern (every d-th key of the "
                                    "window), e.g. 2,4")
    p.add_argument("--globals", help="comma-separated counts of global positions of the bigbird pattern, e.g. 4")
    p.add_argument("--topk", help="comma-separated keys kept per query by the topk pattern (the oracle of a "
                                  "sparse pattern with that budget), e.g. 32,64")
    p.add_argument("--inputs", help="comma-separated sources of q, k, v: random (default), smollm2 (a real LLM's "
                                    "attention inputs; make quality-setup), or the path of a .safetensors/.pt file "
                                    "holding q, k, v (docs/inputs.md); real inputs bring their own heads and head_dim")
    p.add_argument("--layers", help="comma-separated model layers the inputs come from (with --inputs other than "
                                    "random), e.g. 0,15,29; default: the source's own choice")
    p.add_argument("--budget-s", dest="budget_s", type=float, help="seconds of timing per case (default from preset)")
    p.add_argument("--timeout-s", dest="timeout_s", type=float,
                   help="upper bound on each attempt at measuring a case, in seconds (finite; no 'inf': give a "
                        "long bound such as 86400)")
    p.add_argument("--isolate", action="store_true", help="run each case in a fresh subprocess")
    p.add_argument("--all-cells", dest="all_cells", action="store_true",
                   help="a row for every planned cell, also of a variant that cannot run on this device at all "
                        "(by default such a variant is said once, with its reasons, in run.json's 'unavailable', "
                        "show and the report)")
    p.add_argument("--retries", type=int, help="attempts per cell after its first: re-measurements of a cell its own "
                                               "evidence flags (noisy, few calls, host busy, slow calibration, above "
                                               "ceiling), each after a short wait for quiet; default 1 (the end-of-run re-check measures a "
                                               "cell still flagged again), 0 for none")
    p.add_argument("--ceiling-retries", dest="ceiling_retries", type=int,
                   help="end-of-run re-measurements of the matmul ceiling while cells read above it (a ceiling "
                        "measured on a busy machine reads low); default 2, 0 for none")
    p.add_argument("--recheck-retries", dest="recheck_retries", type=int,
                   help="end-of-run re-checks of a cell its own evidence still flags, each one more round; "
                        "default 2, 0 for no re-check")
    p.add_argument("--recheck-wait-s", dest="recheck_wait_s", type=float, metavar="SECONDS",
                   help="how long the end-of-run re-check may wait, all waits together, for a slow machine to come "
                        "back near its best speed (the calibration kernel within 15%% of the run's best) before "
                        "measuring its flagged cells again; a VM's speed can change for a minute or two at a time "
                        "(default: 15%% of the time the cases took, at least 5 and at most 300 s; 0: no wait past "
                        "5 s)")
    p.add_argument("--trust-budget", dest="trust_budget", type=float, metavar="F",
                   help="re-measuring flagged cells and waiting for quiet (--retries, the cross-cell checks and "
                        "the re-check, with their waits) may take, in all, F times the time the run spent measuring "
                        "its cells once (half of it during that first pass, the rest for the end-of-run re-check); then the "
                        f"cells still flagged keep their flags (default {TRUST_BUDGET_FRACTION:g}; 0: none; inf: unbounded)")
    p.add_argument("--rounds", type=int, help="measure every cell this many times over the run, one round after "
                                              "another, and keep each cell's fastest round (or a clean round within "
                                              "15%% of it); a kept round no other reproduces within 15%% is flagged "
                                              "'unreproduced' (default 1)")
    p.add_argument("--short-rounds", dest="short_rounds", type=int, metavar="N",
                   help=f"measure a multi-threaded CPU cell whose calls are short in more rounds than --rounds: "
                        f"N for calls under {SHORT_BELOW_S * 1e3:g} ms, min(N, {LONGER_ROUNDS}) for calls under "
                        f"{ROUND_BELOW_S * 1e3:g} ms (its fastest reading; default 3; 1: as --rounds says). A VM can "
                        "slow such calls (short ones 1.3-1.7x) for seconds to minutes while the calibration kernel "
                        "does not notice, and rounds after the first pass show it; each round is timed for its "
                        "share of --budget-s (budget x rounds / its rounds), so such a cell gets the timing of any "
                        "other (local executor only)")
    p.add_argument("--allocator", choices=list(ALLOCATORS),
                   help="the host allocator while measuring: steady (default: glibc keeps freed memory, so a timed "
                        "call faults no fresh pages whatever ran before it) or system (the C library's defaults: a "
                        "kernel with big temporaries may pay page faults on every call, or not, depending on what "
                        "the process allocated before)")
    p.add_argument("--compile-ahead", dest="compile_ahead", action=argparse.BooleanOptionalAction,
                   help="on a CPU, compile the cases of compiling variants (flex) in parallel worker processes, "
                        "one per core, before the first case is timed; each case then loads its kernel from "
                        "torch's cache, so its setup_s is that load, not the compile (default: on)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress (a bar on a terminal, else a line every 10 s or 5%%) and no summary")


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """--executor and the Ray executor's flags (how cases run, so they may change on --resume)."""
    p.add_argument("--executor", choices=["local", "ray"],
                   help="local (this machine, one case at a time) or ray (cases spread over a Ray cluster: one "
                        "GPU, or one node's CPUs, per case; needs pip install -e '.[ray]'); see docs/scale-out.md")
    p.add_argument("--ray-address", dest="ray_address", metavar="ADDRESS",
                   help="the Ray cluster: auto, or host:port of its head (`ray start --head`); default: a local "
                        "Ray instance sized to this machine, stopped at the end")
    p.add_argument("--ray-cpus-per-case", dest="ray_cpus_per_case", type=int, metavar="N",
                   help="CPU cases take N CPUs each instead of a whole node's, packing several per node: fit for "
                        "correctness sweeps, not timing (recorded in run.json)")


EXECUTION_FLAGS = ("budget_s", "timeout_s", "retries", "ceiling_retries", "recheck_retries", "rounds", "short_rounds",
                   "recheck_wait_s", "trust_budget", "allocator", "compile_ahead", "executor", "ray_address",
                   "ray_cpus_per_case")
