"""`attnbench ci`'s performance regression gate: this tree against BASE_REF, measured on this machine.

1. BASE_REF is resolved to a commit and checked out with ``git worktree add --detach`` into a temporary
   folder (removed afterwards). The tree under test is the working tree (``--tree``, default: the git
   checkout of the current directory). The cases are the regression preset
   (``harness/run/presets/regression.toml``), expanded by *this* harness.
2. Both sides are measured on this machine, in this job, in fresh worker processes that come in
   pairs (one per side, ``--processes`` pairs). Within a pair every case is measured in four blocks,
   A B B A (B A A B in odd pairs), one process waiting while the other measures, so load that comes
   and goes hits both sides alike. Each process times the calibration kernel (float32 512x512 matmul,
   ``harness.bench.timing``) just before its first block of every case. Both sides run the worker of
   *this* harness (``harness/run/worker.py``) with their own tree first on PYTHONPATH, so the timing
   loop is the same for both and only the code under test differs; each worker names the files it
   imported and the gate stops if they are outside its tree. The clock is the measuring thread's CPU
   time (``--clock cpu``), which leaves out time spent preempted by other processes; one torch thread
   per worker.
3. Per process and case: the mean of its two block medians divided by the process's calibration figure
   (the median of its calibrations: the speed of the machine as that process saw it). Per pair: the
   ratio new / base of those figures; load the two processes of a pair shared cancels in it. The
   ratio is the median over pairs (of the log ratios), its interval a bootstrap over whole pairs
   (seed fixed per case), the verdict ``harness.analysis.stats.time_verdict``'s: slower only when the
   whole interval is above ``--threshold``. Each process also measures, once per case, the peak memory
   of one call (allocator events) and the forward error against its tree's float64 reference: more
   memory (5% and 64 KiB) or a less accurate result (``attnbench compare``'s rules) fails the gate
   without statistics.
4. Flagged cases are measured again in ``--recheck-processes`` fresh pairs and judged on those pairs
   alone, not pooled with the pairs that raised the flag: a fluke is not confirmed, a real slowdown is.
5. A slowdown is *accepted* (reported, exit 0) when a commit message in BASE_REF..HEAD of the tested
   tree carries ``[accept-regression: <case-id substring>[, ...]]`` or ``[accept-regression: all]``.
   The threshold is never loosened.

The gate prints a Markdown verdict (``harness.render.gate``; also appended to ``$GITHUB_STEP_SUMMARY``
when that is set). Exit status: 1 on a slowdown no marker accepts, or on a case that ran at BASE_REF
and fails on the tested tree; 2 on bad input (an unknown ref, not a git checkout) or when a side could
not be measured; 0 otherwise.

Modules: ``measure`` (git refs, markers and the worker pairs), ``verdict`` (statistics and verdicts,
pure), ``run`` (the gate's configuration and the run from refs to exit status). This module imports
nothing, so the command line reads the defaults below without loading pandas or torch.
"""

DEFAULT_PROCESSES = 5  # fresh processes per side, run in pairs


DEFAULT_RECHECK_PROCESSES = 8  # more processes per side for flagged cases


DEFAULT_THREADS = 1  # torch threads per worker
