"""The Ray executor: a sweep's cases spread over the GPUs of a node or the nodes of a cluster.

Ray is an optional dependency, imported only when this executor is used. The driver (the process
running ``attnbench sweep``) connects to a cluster (or starts a local instance), checks it can run
the sweep before any case is sent, measures each node's machine figures (matmul ceilings,
calibration) on that node, then sends each pending case as a Ray task that runs the ordinary
in-process executor (or ``Isolated`` with ``--isolate``) on a worker and returns the row's fields.
Rows come back to the driver, the only writer of the journal.

Fairness: a task is pinned to a node and takes one GPU there (CUDA), or that node's CPUs (CPU, by
default), so no two timed cases share a device or cores. ``--ray-cpus-per-case N`` packs CPU cases
N cores each: fit for correctness sweeps, not for timing. A worker that dies (segfault, OOM kill, a
lost node) becomes a row with status ``error`` or ``oom`` and a reason; the sweep goes on.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.core.case import Case
from harness.core.errors import InputError, one_line
from harness.run.config import SweepConfig
from harness.run.ray_cluster import (
    _bounded_connect,
    _check_reachable,
    import_ray,
)
from harness.run.ray_tasks import node_figures, run_case

PROGRESS_EVERY_S = 5.0
NODE_REFRESH_S = 5.0
NO_NODE_GIVE_UP_S = 60.0  # with cases left and no node able to run them for this long, stop (resumable)




# ---- on the driver ------------------------------------------------------------------------------
@dataclass
class _Node:
    node_id: str
    hostname: str
    cpus: int
    gpus: int
    slots: int
    busy: int = 0
    figures: dict | None = None  # None until this node's figures arrived in this session
    alive: bool = True
    refused: bool = False  # its figures could not be measured: no cases go there


@dataclass
class _Flight:
    kind: str  # "case" or "figures"
    node: _Node
    case: Case | None = None
    sent: float = field(default_factory=time.perf_counter)








class RayExecutor:
    """Connects to (or starts) Ray, checks the cluster fits the sweep, measures nodes, runs cases."""

    def __init__(self, config: SweepConfig, address: str | None = None, cpus_per_case: int | None = None,
                 quiet: bool = False) -> None:
        if cpus_per_case is not None and cpus_per_case < 1:
            raise InputError(f"--ray-cpus-per-case must be an integer >= 1, got {cpus_per_case!r}")
        self.ray = import_ray()
        self.config, self.address, self.cpus_per_case, self.quiet = config, address, cpus_per_case, quiet
        self.where = f"--ray-address {address!r}" if address else "the local Ray instance"
        self.owned = False  # whether this executor connected (then it disconnects/shuts down at close)
        self._remote: dict = {}
        self._connect()
        try:
            self.nodes: dict[str, _Node] = {}
            self._refresh_nodes()
            self._validate()
        except BaseException:
            self.close()
            raise

    # ---- connection and checks --------------------------------------------------------------
    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():  # a caller (a notebook, a test) already connected: use it, leave it open
            return
        common = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        if self.address is None:
            ray.init(address="local", num_cpus=os.cpu_count(), object_store_memory=2**28, **common)
        else:
            if self.address != "auto":
                _check_reachable(self.address)
            try:
                with _bounded_connect():
                    ray.init(address=self.address, **{k: v for k, v in common.items() if k != "include_dashboard"})
            except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
                raise InputError(f"cannot connect to the Ray cluster at --ray-address {self.address!r} "
                                 f"({one_line(exc)}); hint: start one with "
                                 "`ray start --head`, or omit --ray-address for a local instance") from None
        self.owned = True

    def _task_resources(self, node: _Node) -> dict:
        if self.config.grid.device == "cuda":
            return {"num_gpus": 1, "num_cpus": self.cpus_per_case or 1}
        return {"num_cpus": self.cpus_per_case or node.cpus}

    def _slots(self, cpus: int, gpus: int) -> int:
        if self.config.grid.device == "cuda":
            return min(gpus, cpus // (self.cpus_per_case or 1))
        return cpus // self.cpus_per_case if self.cpus_per_case else (1 if cpus else 0)

    def _refresh_nodes(self) -> None:
        seen = set()
        for info in self.ray.nodes():
            if not info.get("Alive"):
                continue
            res = info.get("Resources", {})
            cpus, gpus = int(res.get("CPU", 0)), int(res.get("GPU", 0))
            slots = self._slots(cpus, gpus)
            if slots < 1:
                continue
            node_id = info["NodeID"]
            seen.add(node_id)
            if node_id not in self.nodes:
                self.nodes[node_id] = _Node(node_id, info.get("NodeManagerHostname", node_id[:12]), cpus, gpus, slots)
        for node_id, node in self.nodes.items():
            node.alive = node_id in seen

    def _validate(self) -> None:
        resources = self.ray.cluster_resources()
        if self.config.grid.device == "cuda" and not resources.get("GPU"):
            raise InputError(f"{self.where} has no GPU for this device=cuda sweep (cluster resources: "
                             f"{_brief(resources)}); hint: add GPU nodes (`ray start --address ... --num-gpus N`) "
                             "or sweep --device cpu")
        if self.cpus_per_case:
            most = max((int(n.get("Resources", {}).get("CPU", 0)) for n in self.ray.nodes() if n.get("Alive")), default=0)
            if self.cpus_per_case > most:
                raise InputError(f"--ray-cpus-per-case {self.cpus_per_case} is more than any node of {self.where} "
                                 f"has (largest: {most} CPUs); hint: --ray-cpus-per-case {max(most, 1)} or less")
        if not self.nodes:
            raise InputError(f"{self.where} has no node that can run a {self.config.grid.device} case (cluster resources: "
                             f"{_brief(resources)}); hint: start nodes with `ray start --address ...`")

    def execution(self) -> dict:
        """What run.json records under "execution"."""
        policy = ("one GPU per case" if self.config.grid.device == "cuda" else
                  f"{self.cpus_per_case} CPUs per case (packed: for correctness, not timing)" if self.cpus_per_case
                  else "a whole node's CPUs per case")
        return {"executor": "ray", "ray_address": self.address, "ray_cpus_per_case": self.cpus_per_case,
                "ray_policy": policy, "ray_version": self.ray.__version__,
                "ray_nodes": sorted(n.hostname for n in self.nodes.values() if n.alive)}

    # ---- tasks --------------------------------------------------------------------------------
    def _submit(self, fn, node: _Node, *args):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options = dict(**self._task_resources(node), max_retries=0,
                       scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False))
        if fn not in self._remote:
            self._remote[fn] = self.ray.remote(fn)
        node.busy += 1
        return self._remote[fn].options(**options).remote(*args)

    def _cpus(self, node: _Node) -> int:
        return self._task_resources(node)["num_cpus"] if self.config.grid.device == "cpu" else 0

    def _figures_args(self, node: _Node, meta: dict, when: str) -> tuple:
        stored = (meta.get("nodes") or {}).get(node.hostname, {})
        return (self.config.grid.device, list(self.config.grid.dtypes), self._cpus(node),
                not stored.get("ceilings_flops_per_s"), when)

    def _store_figures(self, meta: dict, node: _Node, fig: dict) -> None:
        """run.json "nodes": {hostname: {...}}; the driver's node (or the only one) also fills the top-level keys."""
        host = fig["node"]
        entry = meta.setdefault("nodes", {}).setdefault(host, {"calibration": []})
        cal = fig.pop("calibration")
        ceilings = fig.pop("ceilings_flops_per_s", None)
        fig.pop("node")
        entry.update(fig)
        entry["calibration"].append(cal)
        if ceilings is not None:
            entry["ceilings_flops_per_s"] = ceilings
        node.figures = entry
        node.hostname = host
        hosts = {n.hostname for n in self.nodes.values() if n.alive} | {host}
        if host == (platform.node() if platform.node() in hosts else min(hosts)):
            if not meta.get("ceilings_flops_per_s"):
                meta["ceilings_flops_per_s"] = dict(entry.get("ceilings_flops_per_s") or {})
            meta.setdefault("calibration", []).append(cal)

    def measure_nodes(self, meta: dict, when: str) -> None:
        """Every alive node's calibration (and ceilings, once per run per node), into ``meta``; waits for all."""
        self._refresh_nodes()
        flights = {self._submit(node_figures, n, *self._figures_args(n, meta, when)): n
                   for n in self.nodes.values() if n.alive}
        self._log(f"ray: measuring machine figures on {len(flights)} node(s) ...")
        for ref, node in flights.items():
            node.busy -= 1
            try:
                self._store_figures(meta, node, self.ray.get(ref))
            except self.ray.exceptions.RayError as exc:  # tried once more when the cases start, then refused
                self._log(f"ray: node {node.hostname}: no machine figures ({one_line(exc)})")

    def run(self, cases: list[Case], meta: dict, on_row: Callable[[Case, dict, float], None],
            total: int, done: int) -> None:
        """Send every case, hand each finished row to ``on_row(case, metrics, wall_s)`` as it arrives.

        Ctrl-C cancels the tasks in flight (their cases stay pending for --resume) and re-raises.
        """
        ray = self.ray
        pending: deque[Case] = deque(cases)
        flights: dict = {}
        config = self.config.with_execution(short_rounds=1).to_dict()  # no rounds on Ray: a short call's whole budget
        last_progress = last_refresh = time.monotonic()
        idle_since = None
        try:
            while pending or flights:
                now = time.monotonic()
                if now - last_refresh > NODE_REFRESH_S:
                    self._refresh_nodes()
                    last_refresh = now
                for node in self.nodes.values():
                    if not node.alive or node.refused:
                        continue
                    if node.figures is None and node.busy == 0:  # a node that joined during the sweep
                        flights[self._submit(node_figures, node, *self._figures_args(node, meta, "join"))] = \
                            _Flight("figures", node)
                        continue
                    while node.figures is not None and pending and node.busy < node.slots:
                        case = pending.popleft()
                        ceilings = node.figures.get("ceilings_flops_per_s") or {}
                        ref = self._submit(run_case, node, config, ceilings, case.to_record(), self._cpus(node),
                                           node.figures.get("calibration") or [])
                        flights[ref] = _Flight("case", node, case)
                if not flights:
                    idle_since = idle_since or now
                    if now - idle_since > NO_NODE_GIVE_UP_S:
                        raise InputError(f"{self.where} has had no node able to run {self.config.grid.device} cases for "
                                         f"{NO_NODE_GIVE_UP_S:g} s; {len(pending)} cases left; hint: add nodes, "
                                         "then finish with --resume")
                    time.sleep(1.0)
                    self._refresh_nodes()
                    continue
                idle_since = None
                ready, _ = ray.wait(list(flights), num_returns=1, timeout=1.0)
                if ready:
                    ready, _ = ray.wait(list(flights), num_returns=len(flights), timeout=0)
                for ref in ready:
                    flight = flights.pop(ref)
                    flight.node.busy -= 1
                    if flight.kind == "figures":
                        self._finish_figures(meta, flight, ref)
                        continue
                    metrics, wall_s = self._result(flight, ref)
                    on_row(flight.case, metrics, wall_s)
                    done += 1
                if time.monotonic() - last_progress > PROGRESS_EVERY_S:
                    self._progress(done, total)
                    last_progress = time.monotonic()
        except KeyboardInterrupt:
            for ref in flights:
                ray.cancel(ref, force=True)
            raise
        self._progress(done, total)

    def _finish_figures(self, meta: dict, flight: _Flight, ref) -> None:
        try:
            self._store_figures(meta, flight.node, self.ray.get(ref))
        except self.ray.exceptions.RayError as exc:  # a node that cannot measure gets no cases
            flight.node.refused = True
            self._log(f"ray: node {flight.node.hostname}: no machine figures, no cases sent there "
                      f"({one_line(exc)})")

    def _result(self, flight: _Flight, ref) -> tuple[dict, float]:
        """(row fields, wall_s) of a finished case; a task that died is a row naming why and where."""
        exceptions = self.ray.exceptions
        try:
            out = self.ray.get(ref)
            return out["metrics"], out["wall_s"]
        except exceptions.RayError as exc:
            node = flight.node
            cause = getattr(exc, "cause", None)
            if isinstance(exc, exceptions.RayTaskError) and isinstance(cause, BaseException):
                reason = f"{one_line(cause)} (raised in the Ray task)"
            else:
                reason = one_line(exc)
            if isinstance(exc, (exceptions.NodeDiedError,)) or not self._node_alive(node):
                reason = f"node {node.hostname} lost: {reason}"
            status = "oom" if isinstance(exc, exceptions.OutOfMemoryError) else "error"
            metrics = {"status": status, "reason": reason, "node": node.hostname, "node_id": node.node_id,
                       "device_name": (node.figures or {}).get("device_name")}
            return metrics, time.perf_counter() - flight.sent

    def _node_alive(self, node: _Node) -> bool:
        self._refresh_nodes()
        return node.alive

    # ---- output -------------------------------------------------------------------------------
    def _log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def _progress(self, done: int, total: int) -> None:
        busy = [f"{n.hostname} {n.busy}/{n.slots}" for n in self.nodes.values() if n.alive]
        self._log(f"ray: {done}/{total} cases done; busy: {', '.join(busy) or 'no node'}")

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()
            self.owned = False


def _brief(resources: dict) -> str:
    keys = [k for k in ("CPU", "GPU", "memory") if k in resources]
    return ", ".join(f"{k}={resources[k]:g}" for k in keys) or "none"
