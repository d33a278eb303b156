"""The search's trials on Ray: a two-node cluster started in the test on this machine (Ray's own
``cluster_utils.Cluster``: two raylets, each a node with its own id and one CPU), a search that runs
there, is killed mid-way with its cluster, and resumes on a fresh cluster; and the runner's handling
of a node that fails, with a stand-in for Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.core.errors import ConfigError
from unbottle.optimizer import cluster, identity
from unbottle.optimizer.cluster import Job, RayRunner
from unbottle.optimizer.config import OptimizeConfig
from unbottle.optimizer.isolate import TrialOutcome
from unbottle.optimizer.search import Search
from unbottle.store import Store

CANDIDATES = ("wo-int8", "dynamic-int8", "precision")
SETTINGS = {"objective": "size", "eval_tokens": 1024, "threads": 1}
ARGS = ["--objective", "size", "--eval-tokens", "1024", "--threads", "1", "--json"]


def _cluster() -> Any:
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a test's cluster
    small = {"num_cpus": 1, "object_store_memory": 80 * 2**20}
    made = cluster_utils.Cluster(initialize_head=True, head_node_args={**small, "include_dashboard": False})
    made.add_node(**small)
    return made


def _optimize(address: str, out: str) -> subprocess.Popen:
    picks = [a for c in CANDIDATES for a in ("--candidate", c)]
    cmd = [sys.executable, "-m", "unbottle.cli", "optimize", "tiny-llama", *ARGS, *picks, "-o", out]
    return subprocess.Popen(
        [*cmd, "--ray", address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _recorded(key: str) -> dict[str, Any]:
    return {k: v for k, v in Store().trials(key).items() if k != identity.IDENTITY}


def test_a_two_node_search_completes_and_resumes_after_the_driver_and_cluster_are_killed(tmp_path):
    cfg = OptimizeConfig(model="tiny-llama", candidates=CANDIDATES, **SETTINGS)
    key = f"{cfg.search_key()}-{identity.digest(identity.circumstances(cfg.model, cfg.threads))}"
    out = str(tmp_path / "out")
    first_cluster = _cluster()
    try:
        first = _optimize(first_cluster.address, out)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            if any(k.startswith("screen:") for k in _recorded(key)):
                break
            time.sleep(0.2)
        assert first.poll() is None, first.communicate()[1]
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        first_cluster.shutdown()
    done_before = set(_recorded(key))
    assert "baseline" in done_before and sum(k.startswith("node:") for k in done_before) == 2

    second_cluster = _cluster()  # a cluster restart: new nodes, new ids
    try:
        second = _optimize(second_cluster.address, out)
        stdout, stderr = second.communicate(timeout=300)
    finally:
        second_cluster.shutdown()
    assert second.returncode == 0, stderr
    doc = json.loads(stdout.strip().splitlines()[-1])["optimize"]
    kept = {k for k in done_before if not k.startswith("node:")}  # the old nodes are gone
    for done in kept:
        assert f"{done}: recorded earlier" in stderr and f"{done}: running" not in stderr
    assert doc["resumed_trials"] >= len(kept) >= 2
    assert doc["winner"] is not None and (tmp_path / "out" / "unbottle-recipe.json").exists()

    # each node of the new cluster measured itself; every candidate trial names the node it ran on
    assert len(doc["nodes"]) == 2 and {n["status"] for n in doc["nodes"]} == {"ok"}
    assert all(n["cpu"] and n["hostname"] and n["physical_cores"] >= 1 for n in doc["nodes"])
    rows = {r["key"]: r for r in doc["trials"]}
    candidates = [k for k in rows if k.split(":")[0] in ("screen", "final")]
    assert all(rows[k]["node"]["node_id"] for k in candidates)  # the recorded ones too
    ran_now = {rows[k]["node"]["node_id"] for k in candidates if k not in kept}
    assert ran_now == {n["node_id"] for n in doc["nodes"]}, "both new nodes took candidates"
    assert "node" not in rows["baseline"] and all(
        "node" not in r for k, r in rows.items() if k.startswith("verify")
    )

    md = CliRunner().invoke(app, ["report", "last", "--format", "md"]).stdout
    assert "nodes" in md and all(n["node_id"][:12] in md for n in doc["nodes"])

    # trial results identical in kind to a search on this machine alone
    alone = Search(
        OptimizeConfig(model="tiny-llama", candidates=("wo-int8",), **SETTINGS), Store(), tmp_path / "o"
    )
    local = alone.run()
    assert local["nodes"] == []
    recorded = _recorded(key)
    for stage in ("screen", "final"):
        here = alone.trials[f"{stage}:wo-int8"]
        there = recorded[f"{stage}:wo-int8"]
        assert set(there) - {"node"} == set(here) and set(there["result"]) == set(here["result"])


def test_without_ray_the_option_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: importing it fails
    with pytest.raises(ConfigError, match=r"pip install 'unbottle\[ray\]'"):
        cluster.make_runner("auto", print)


def test_an_address_where_nothing_answers_is_refused_at_once(tmp_path):
    pytest.importorskip("ray")
    start = time.monotonic()
    result = CliRunner().invoke(
        app,
        ["optimize", "tiny-llama", "--objective", "size", "--ray", "127.0.0.1:1", "-o", str(tmp_path / "o")],
    )
    assert result.exit_code == 2
    assert "--ray '127.0.0.1:1' given, but nothing answers there" in result.output
    assert "ray start --head" in result.output
    assert time.monotonic() - start < 60  # not Ray's own minutes of retries


class _FakeRay:
    """Just enough of Ray for ``RayRunner.run_all``: tasks finish in submission order; a task sent to
    a node in ``failing`` raises Ray's own error, as when that node dies."""

    class exceptions:  # noqa: N801  (as ray.exceptions)
        class RayError(Exception):
            pass

    class util:  # noqa: N801
        class scheduling_strategies:  # noqa: N801
            @staticmethod
            def NodeAffinitySchedulingStrategy(node: str, soft: bool) -> str:  # noqa: N802
                return node

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.sent: list[tuple[str, str]] = []  # (node, target)

    def options(self, scheduling_strategy: str) -> Any:
        fake = self

        class Task:
            def remote(self, target: str, payload: dict, timeout_s: float, limit: float | None) -> int:
                fake.sent.append((scheduling_strategy, target))
                return len(fake.sent) - 1

        return Task()

    def wait(self, refs: list[int], num_returns: int, timeout: float) -> tuple[list[int], list[int]]:
        return [min(refs)], []

    def get(self, ref: int) -> dict[str, Any]:
        node, target = self.sent[ref]
        if node in self.failing:
            raise self.exceptions.RayError("The node with node id: abc has been marked dead")
        ok = TrialOutcome("ok", result={"target": target}, seconds=1.0)
        return {"outcome": ok.to_dict(), "node": {"node_id": node, "hostname": "fake"}}

    def cancel(self, ref: int, force: bool) -> None:
        raise AssertionError("nothing should go silent here")


def test_a_node_that_dies_is_dropped_its_trial_lost_and_the_rest_run_on_the_others():
    fake = _FakeRay(failing={"node-b"})
    runner = object.__new__(RayRunner)
    lines: list[str] = []
    runner.ray, runner.task, runner.log, runner.nodes = fake, fake, lines.append, ["node-a", "node-b"]
    ended: dict[str, tuple] = {}

    def finish(item: str, job: Job, outcome: Any, node: Any, lost: str) -> None:
        ended[item] = (outcome, node, lost)

    jobs = [f"t{i}" for i in range(4)]
    runner.run_all(jobs, lambda item: Job(item, f"mod:{item}", {}, 10.0, None), finish)

    assert set(ended) == set(jobs)
    lost = [i for i, (outcome, _, _) in ended.items() if outcome is None]
    assert lost == ["t1"] and "node-b" in ended["t1"][2] and "marked dead" in ended["t1"][2]
    for item in ("t0", "t2", "t3"):
        outcome, node, _ = ended[item]
        assert outcome.status == "ok" and node["node_id"] == "node-a"
    assert runner.nodes == ["node-a"] and any("node-b" in line and "dropped" in line for line in lines)
