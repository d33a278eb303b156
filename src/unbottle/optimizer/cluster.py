"""Where the search's trials run: one after another on this machine, or across a Ray cluster.

``LocalRunner`` is the default: each trial in a worker process here (``unbottle.optimizer.isolate``).
``RayRunner`` (``unbottle optimize --ray auto|ADDRESS``) sends each trial to a Ray task pinned to one
node, which runs it in the same kind of worker, with the same timeout, memory limit (75% of *that*
node's memory unless one is given) and crash handling; what comes back is the same outcome plus the
node's description. Ray does the remote execution, placement and failure detection; this module only
decides which node is free: one trial per node at a time, because a timing A/B that shares a machine
with another trial measures the other trial (decode is bound by memory bandwidth, which every core of
a node shares).

Each node first measures its own noise floor (``unbottle.optimizer.nodes.node_baseline``). A node
whose task fails in Ray itself (the node died, its Ray worker was killed) is dropped and its trial is
not recorded, so the next run of the same command tries it again; a trial that crashes, hangs or
runs out of memory in its worker is a recorded outcome, as on one machine. The results are written
by the driver, in its store, as each trial ends: killing the driver, or restarting the cluster, loses
only the trials in flight.

Nodes read the model and the caches at the driver's paths: the packaged models need unbottle and the
model packages installed on every node, and a model given as a path (or ``UNBOTTLE_CACHE``) should be
on a filesystem every node mounts; a node without it fills its own caches in its first trial.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import psutil

from unbottle.core.errors import ConfigError
from unbottle.core.naming import given
from unbottle.optimizer import isolate
from unbottle.optimizer.isolate import TrialOutcome
from unbottle.optimizer.nodes import describe_node

INSTALL = "pip install 'unbottle[ray]'"
# the settings a worker reads from its environment, passed to every node as the driver has them
PASSED_ENV = ("UNBOTTLE_CACHE", "UNBOTTLE_HOME", "XDG_CACHE_HOME", "HF_HOME", "UNBOTTLE_INJECT_FAULT")
CONNECT_TIMEOUT_S = 5.0  # the head's port must answer within this
GRACE_S = 120.0  # past a trial's own timeout, the driver gives a silent node this long before dropping it
NO_NODE = "no Ray node is left"


@dataclasses.dataclass
class Job:
    """One trial ready to run: ``target(payload)`` in a worker within ``timeout_s``."""

    key: str
    target: str
    payload: dict[str, Any]
    timeout_s: float
    memory_limit_mib: float | None
    record: bool = True
    node: str | None = None  # a Ray node id to run on; None: any free node


Finish = Callable[[Any, Job, TrialOutcome | None, dict[str, Any] | None, str], None]


class LocalRunner:
    """Every trial in a worker on this machine, one after another."""

    parallel = 1
    nodes: list[str] = []

    def run(self, job: Job) -> tuple[TrialOutcome | None, dict[str, Any] | None, str]:
        limit = memory_limit(job.memory_limit_mib)
        return isolate.run_isolated(job.target, job.payload, job.timeout_s, limit), None, ""

    def run_all(self, items: Iterable[Any], start: Callable[[Any], Job | None], finish: Finish) -> None:
        """``start(item)`` when the item's turn comes (None: nothing to run), then ``finish`` with the
        outcome (None when the runner lost it, with the reason), the node and that reason."""
        for item in items:
            job = start(item)
            if job is not None:
                finish(item, job, *self.run(job))

    def close(self) -> None:
        return None


def run_on_node(
    target: str, payload: dict[str, Any], timeout_s: float, memory_limit_mib: float | None
) -> dict[str, Any]:
    """The Ray task: one isolated trial on this node, and the node's description."""
    import ray

    outcome = isolate.run_isolated(target, payload, timeout_s, memory_limit(memory_limit_mib))
    return {"outcome": outcome.to_dict(), "node": describe_node(ray.get_runtime_context().get_node_id())}


class RayRunner:
    """Trials as Ray tasks, one per node at a time (see the module docstring)."""

    def __init__(self, address: str, log: Callable[[str], None]) -> None:
        self.ray = _import_ray()
        self.log = log
        self.started_here = _connect(self.ray, address, log)
        self.task = self.ray.remote(num_cpus=0, max_retries=0)(run_on_node)
        self.nodes = [n["NodeID"] for n in self.ray.nodes() if n.get("Alive")]
        if not self.nodes:
            raise ConfigError(f"the Ray cluster at {address!r} has no live node; start one with `ray start`")
        log(f"Ray: {len(self.nodes)} node(s); one trial per node at a time")

    @property
    def parallel(self) -> int:
        return len(self.nodes)

    def run(self, job: Job) -> tuple[TrialOutcome | None, dict[str, Any] | None, str]:
        got: list[tuple[TrialOutcome | None, dict[str, Any] | None, str]] = []
        self.run_all([job], lambda j: j, lambda _i, _j, *rest: got.append(rest))
        return got[0] if got else (None, None, NO_NODE)

    def run_all(self, items: Iterable[Any], start: Callable[[Any], Job | None], finish: Finish) -> None:
        """As ``LocalRunner.run_all``, with as many trials in flight as there are free nodes; an item's
        ``start`` is called only when a node is free for it, so the budget it checks is current. Once
        every node is gone, the items left are neither started nor finished."""
        queue, idle = list(items), list(self.nodes)
        pending: dict[Any, tuple[Any, Job, str, float]] = {}
        while queue or pending:
            while queue and idle and self.nodes:
                item = queue.pop(0)
                job = start(item)
                if job is None:
                    continue
                node = job.node if job.node in idle else idle[0]
                idle.remove(node)
                pending[self._submit(job, node)] = (
                    item,
                    job,
                    node,
                    time.monotonic() + job.timeout_s + GRACE_S,
                )
            if not pending:  # every node is gone: what is left is never started (nor recorded)
                return
            self._collect(pending, idle, finish)

    def _submit(self, job: Job, node: str) -> Any:
        strategy = self.ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node, soft=False)
        task = self.task.options(scheduling_strategy=strategy)
        return task.remote(job.target, job.payload, job.timeout_s, job.memory_limit_mib)

    def _collect(
        self, pending: dict[Any, tuple[Any, Job, str, float]], idle: list[str], finish: Finish
    ) -> None:
        """Wait for one trial to end (or a node to go silent) and hand it to ``finish``."""
        wait = max(0.1, min(d for *_, d in pending.values()) - time.monotonic())
        done, _ = self.ray.wait(list(pending), num_returns=1, timeout=wait)
        if not done:  # the earliest deadline passed without an answer: that node is dropped
            ref = min(pending, key=lambda r: pending[r][3])
            self.ray.cancel(ref, force=True)
            item, job, node, _ = pending.pop(ref)
            self.drop(node, "no answer past the trial's timeout")
            finish(item, job, None, None, f"its Ray node ({node[:12]}) stopped answering")
            return
        ref = done[0]
        item, job, node, _ = pending.pop(ref)
        try:
            got = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.drop(node, reason)
            finish(item, job, None, None, f"its Ray node ({node[:12]}) failed: {reason}")
            return
        idle.append(node)
        finish(item, job, TrialOutcome(**got["outcome"]), got["node"], "")

    def drop(self, node: str, why: str) -> None:
        if node in self.nodes:
            self.nodes.remove(node)
        self.log(f"Ray: node {node[:12]} dropped ({why}); {len(self.nodes)} left")

    def close(self) -> None:
        if self.ray.is_initialized():
            self.ray.shutdown()


def memory_limit(given_mib: float | None) -> float:
    """A worker's memory limit on the machine this runs on: the given one, else 75% of its memory."""
    return given_mib if given_mib is not None else 0.75 * psutil.virtual_memory().total / 2**20


def make_runner(address: str | None, log: Callable[[str], None]) -> LocalRunner | RayRunner:
    return LocalRunner() if address is None else RayRunner(address, log)


def _import_ray() -> Any:
    try:
        import ray
        import ray.util.scheduling_strategies  # noqa: F401  (the node pinning)
    except ImportError:
        raise ConfigError(
            f"{given('ray', 'ADDRESS')} needs Ray, which is not installed: {INSTALL} (on the driver and "
            "every node), or leave the option out to run the search on this machine"
        ) from None
    return ray


def _connect(ray: Any, address: str, log: Callable[[str], None]) -> bool:
    """Join the cluster at ``address`` (``auto``: the one started on this machine with ``ray start``,
    else a new one-node instance here); True when the instance was started here."""
    _check_answers(address)
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    options = {"runtime_env": {"env_vars": env}, "log_to_driver": False, "logging_level": "WARNING"}
    try:
        ray.init(address=address, **options)
        return False
    except (ConnectionError, ValueError, RuntimeError) as exc:
        if address != "auto":
            raise ConfigError(
                f"{given('ray', address, quote=True)} given, but no Ray cluster answers there ({exc}); "
                "start one with `ray start --head` (and `ray start --address HEAD:PORT` on each other "
                "node) and give the head's address, or `auto` on a node of the cluster"
            ) from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # an instance unbottle starts sends no usage data
    ray.init(include_dashboard=False, **options)
    log("Ray: no running cluster found; started a one-node instance on this machine")
    return True


def _check_answers(address: str) -> None:
    """A ``HOST:PORT`` that nothing listens on is refused at once (Ray itself retries for minutes)."""
    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(
            f"{given('ray', address, quote=True)} given, but nothing answers there ({exc}); start a "
            "cluster with `ray start --head` (and `ray start --address HEAD:PORT` on each other node) "
            "and give the head's address, or `auto` on a node of the cluster"
        ) from None
