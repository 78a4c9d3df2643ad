#!/usr/bin/env bash
# Compare two commits with the asv suite, in the current interpreter: nothing is installed, torch is
# never downloaded (asv.conf.json uses an "existing" environment, where asv continuous is refused).
#
#   harness/asv_bench/compare.sh BASE [HEAD] [asv run options, e.g. -b 'time_attention|track_peak']
#
# Records both commits with record.sh (each from its own `git archive` export, benchmarked by this
# checkout's suite and grid), then runs `asv compare`. Exit status: 0 if nothing got worse, 1 if a
# time_* or track_peak_mem_bytes cell got slower/bigger by more than ASV_FACTOR (default 1.1) or
# failed after working, 2 on usage errors. `asv compare` itself always exits 0, and it treats every
# value as "lower is better" (asv issue #1617): a drop in track_flops_per_s is listed as an
# improvement, so the gate leaves track_flops_per_s out (time_attention covers the same change).
set -euo pipefail

if [ $# -lt 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
root=$(git rev-parse --show-toplevel)
cd "$root"
base=$(git rev-parse --verify --quiet "$1^{commit}") || { echo "compare.sh: $1 is not a commit" >&2; exit 2; }
shift
head_ref=HEAD
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then head_ref=$1; shift; fi
head=$(git rev-parse --verify --quiet "$head_ref^{commit}") || { echo "compare.sh: $head_ref is not a commit" >&2; exit 2; }
factor=${ASV_FACTOR:-1.1}

"$here/record.sh" "$base" "$head" "$@"

out=$(mktemp "${TMPDIR:-/tmp}/attnbench-asv-compare.XXXXXX")
trap 'rm -f "$out"' EXIT
"${ASV:-asv}" compare --split --factor "$factor" "$base" "$head" | tee "$out"
# Table rows start with a mark: "+" worse, "!" failed after working, "-" better, "x" not comparable.
if grep -E '^\| [+!] ' "$out" | grep -v 'track_flops_per_s' >/dev/null; then
  echo "compare.sh: regression from ${base:0:8} to ${head:0:8} (factor $factor)" >&2
  exit 1
fi
echo "compare.sh: no regression from ${base:0:8} to ${head:0:8} (factor $factor)"
