#!/usr/bin/env bash
# Record asv results for commits, in the current interpreter: nothing is installed, torch is never
# downloaded (asv.conf.json uses an "existing" environment, which asv only saves with --set-commit-hash).
#
#   harness/asv_bench/record.sh [COMMIT ...] [asv run options, e.g. -b time_attention]
#
# COMMIT defaults to HEAD. Each commit's tree is exported with `git archive` to a temporary folder
# (the repository, its index and its working tree are left alone, so a dirty tree is never recorded
# under a commit's name) and put first on the benchmarks' sys.path (ASV_PYTHONPATH); the benchmark
# suite and its grid are the ones of this checkout, so every commit runs the same cells. Results go
# to results/asv/<machine>/<commit>-existing-*.json; `asv publish` turns them into reports/asv.
# asv comes from PATH, or from $ASV: activate the project's .venv first (--python=same benchmarks the
# interpreter that runs asv, so it must be the one with torch and attnbench).
set -euo pipefail

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

root=$(git rev-parse --show-toplevel)
cd "$root"
commits=()
while [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; do
  sha=$(git rev-parse --verify --quiet "$1^{commit}") || { echo "record.sh: $1 is not a commit" >&2; exit 2; }
  commits+=("$sha"); shift
done
[ ${#commits[@]} -gt 0 ] || commits=("$(git rev-parse HEAD)")

# asv refuses to run on a machine it has no description of ("No information stored about machine");
# on a fresh machine, describe this one with asv's detected defaults, non-interactively.
machine_known() {
  python3 - "$HOME/.asv-machine.json" <<'PY'
import json, os, platform, sys
path = sys.argv[1]
d = json.load(open(path)) if os.path.isfile(path) else {}
names = [k for k in d if k != "version"]
sys.exit(0 if platform.uname().node in names or len(names) == 1 else 1)
PY
}
if ! machine_known; then
  echo "record.sh: asv has no description of this machine; storing one: ${ASV:-asv} machine --yes" >&2
  "${ASV:-asv}" machine --yes
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/attnbench-asv.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

for sha in "${commits[@]}"; do
  mkdir -p "$tmp/$sha"
  git archive "$sha" | tar -x -C "$tmp/$sha"
  echo "== asv run for $(git log -1 --format='%h %s' "$sha")"
  ASV_PYTHONPATH="$tmp/$sha" "${ASV:-asv}" run --python=same --set-commit-hash "$sha" "$@"
done
