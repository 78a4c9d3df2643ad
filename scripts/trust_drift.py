"""How far the runs of a trust proof (scripts/trust_proof.py) agree with each other, raw and normalized
by the calibration kernel timed beside each cell (as `attnbench compare` normalizes).

For each pair (quiet after / quiet before, loaded / quiet before): the median ratio over cells, how
many cells agree within 15%, and the 5-95% range. Where normalizing pulls the median back to 1, the
machine as a whole drifted between the runs (the calibration saw it); what is left is drift specific
to the cells, which no calibration corrects.

Run: python scripts/trust_drift.py [results/trust-proof ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from harness.core.errors import InputError
from harness.store.load import load_run


def _ok(run: Path) -> pd.DataFrame:
    df, _ = load_run(run)
    return df[df["status"] == "ok"].set_index("case_id")


def _text(ratio: pd.Series) -> str:
    ratio = ratio.dropna().astype(float)
    within = int(((ratio - 1).abs() <= 0.15).sum())
    return (f"median {ratio.median():.2f}, within 15%: {within}/{len(ratio)}, "
            f"5-95% [{ratio.quantile(0.05):.2f}, {ratio.quantile(0.95):.2f}]")


def drift_lines(folder: Path) -> list[str]:
    runs = {name: _ok(folder / name) for name in ("quiet", "loaded", "quiet-after") if (folder / name).is_dir()}
    if "quiet" not in runs:
        raise InputError(f"{folder} has no quiet/ run; hint: pass the --out folder of scripts/trust_proof.py")
    base = runs["quiet"]
    lines = []
    for name, label in (("quiet-after", "quiet after / quiet"), ("loaded", "loaded / quiet")):
        if name not in runs:
            continue
        run = runs[name]
        cells = run.index.intersection(base.index)
        raw = run.loc[cells, "time_s_median"] / base.loc[cells, "time_s_median"]
        norm = raw * base.loc[cells, "calibration_s"] / run.loc[cells, "calibration_s"]
        lines.append(f"{folder} {label}: raw {_text(raw)} | normalized {_text(norm)}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="*", default=["results/trust-proof"])
    args = ap.parse_args()
    try:
        for folder in args.folders:
            print("\n".join(drift_lines(Path(folder))))
    except InputError as exc:
        print(f"trust_drift: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
