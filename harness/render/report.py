"""`attnbench report`'s output: one self-contained HTML file from one or more run folders.

The report is a single file: plots are base64 PNGs drawn with matplotlib's Agg canvas, tables are
plain HTML with a few lines of inline JS to sort them; it opens from disk with no network. Every
report lives in <reports root>/<name>/index.html and <reports root>/index.html lists them all. This
module loads the runs, renders ``templates/report.html`` with the context of ``harness.render.context``
and writes the file; jinja2 is imported only when a page is rendered.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.core.errors import InputError
from harness.render.context import build_context
from harness.render.index import INDEX, update_index
from harness.store.load import load_run
from harness.store.schema import LIST_COLUMNS

REPORTS_ROOT = Path("reports")


# ---- loading ----------------------------------------------------------------------------------
def load_runs(run_dirs) -> list[tuple]:
    """[(tidy DataFrame, run.json metadata, folder)] for each run folder; bad input is an InputError."""
    if not run_dirs:
        raise InputError("no run folder given; hint: attnbench report results/<run-id>")
    runs, seen = [], {}
    for given in run_dirs:
        path = Path(given)
        if not path.exists():
            raise InputError(f"run folder {str(given)!r} does not exist; hint: pass a folder made by "
                             "`attnbench sweep`, e.g. results/<run-id> (ls results/)")
        if not path.is_dir():
            raise InputError(f"{str(given)!r} is a file, not a run folder; hint: pass the folder that holds "
                             "run.json, e.g. results/<run-id>")
        df, meta = load_run(path)
        run_id = str(meta.get("run_id") or path.name)
        if run_id in seen:
            raise InputError(f"run {run_id!r} is given twice ({seen[run_id]} and {path}); hint: give each run "
                             "folder once")
        seen[run_id] = path
        df = df.drop(columns=list(LIST_COLUMNS), errors="ignore")
        df["run_id"] = run_id  # rows of one folder belong to that folder's run
        runs.append((df, meta, path))
    return runs


def report_name(run_ids: list[str]) -> str:
    """Folder name of a report: the run id, or the run ids joined by ``__vs__`` (shortened if long)."""
    name = "__vs__".join(run_ids)
    if len(name) > 120:
        name = f"{run_ids[0]}__and-{len(run_ids) - 1}-more"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "report"


def _environment():
    # local: keeps importing the report modules light (tested)
    from jinja2 import Environment, PackageLoader  # lazy: start-up

    return Environment(loader=PackageLoader("harness.render", "templates"), autoescape=True, trim_blocks=True,
                       lstrip_blocks=True)


def render_report(runs: list[tuple], baseline: str | None = None, generated_at: str | None = None) -> str:
    """The report's HTML text for loaded runs (see load_runs)."""
    return _environment().get_template("report.html").render(**build_context(runs, baseline, generated_at))


def build_report(run_dirs, out: str | Path | None = None, baseline: str | None = None,
                 reports_root: str | Path | None = None) -> tuple[Path, Path | None]:
    """Write the report of ``run_dirs``; returns (report path, reports index path or None).

    Default output: <reports_root>/<name>/index.html with reports_root ``reports``. With ``out`` and
    no ``reports_root``, an ``out`` named index.html is taken to sit in <root>/<name>/ and that root's
    index is updated; any other ``out`` is written alone.
    """
    runs = load_runs(run_dirs)
    run_ids = [str(m.get("run_id") or p.name) for _, m, p in runs]
    if out is None:
        root = Path(reports_root) if reports_root is not None else REPORTS_ROOT
        out = root / report_name(run_ids) / INDEX
    else:
        out = Path(out)
        if out.is_dir() or out.suffix.lower() not in (".html", ".htm"):
            raise InputError(f"-o {str(out)!r} must be an .html file path; hint: -o reports/<name>/index.html")
        root = Path(reports_root) if reports_root is not None else (out.parent.parent if out.name == INDEX else None)
    tmp = out.with_name(out.name + ".tmp")
    try:  # before rendering, which takes a while: fail at once on a path that cannot be written
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.touch()
    except OSError as exc:
        raise InputError(f"cannot write the report to {str(out)!r}: {exc.strerror or exc}; hint: -o "
                         "reports/<name>/index.html, in a folder you can write") from None
    try:
        tmp.write_text(render_report(runs, baseline), encoding="utf-8")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    index = None
    if root is not None and out.resolve().parent.parent == Path(root).resolve():
        index = update_index(root)
    return out, index
