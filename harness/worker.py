"""One case in a fresh process (for `attnbench sweep --isolate`): JSON job on stdin, one row on stdout."""

import json
import sys


def main() -> int:
    from harness.case import Case
    from harness.runner import ROW_MARKER, InProcess
    from harness.sweep import build_config

    job = json.loads(sys.stdin.read())
    config = build_config(job["config"])
    case = Case.from_record(job["case"])
    metrics = InProcess(config, {case.dtype: job["ceiling"]} if job["ceiling"] else {}).metrics(case)
    print(ROW_MARKER + json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
