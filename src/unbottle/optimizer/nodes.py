"""What runs on each machine of a cluster search: its description and its own noise floor.

A trial's A/B runs inside one worker, so the candidate and the baseline it is compared with always
share a machine; the rates and noise of one machine say nothing about another. Before a node takes
candidates, ``node_baseline`` measures it as the search's baseline measures the driver's host: an
A-vs-A screen of two copies of the model (the node's own noise floor and rates) and the cores other
processes kept busy meanwhile, with the node's host description (``describe_node``), which every
trial run there also carries.
"""

from __future__ import annotations

import platform
import socket
from typing import Any

import psutil

from unbottle.benchmarking import apply_threads
from unbottle.comparison.ab import ABConfig, run_ab
from unbottle.comparison.noise import noise_floor_from
from unbottle.comparison.speed import compare_rounds
from unbottle.core.env import cpu_info, logical_cpus, physical_cores
from unbottle.optimizer.config import OptimizeConfig
from unbottle.optimizer.host import HostLoad
from unbottle.optimizer.trial import load_model

NODE_BASELINE = "unbottle.optimizer.nodes:node_baseline"  # the worker function each node runs first


def describe_node(node_id: str | None = None) -> dict[str, Any]:
    """The machine this process runs on: what a benchmark number needs beside it."""
    cpu = cpu_info()
    llc = cpu.get("llc") or {}
    return {
        "node_id": node_id,
        "hostname": socket.gethostname(),
        "cpu": cpu.get("model"),
        "physical_cores": physical_cores(),
        "logical_cpus": logical_cpus(),
        "llc_mib": round(llc["bytes"] / 2**20, 1) if llc.get("bytes") else None,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
    }


def node_baseline(payload: dict[str, Any]) -> dict[str, Any]:
    """Worker: this node's A-vs-A screen (rates, noise floor) and host load, as the search's baseline
    measures its own host. A search without a speed objective measures only the host load."""
    cfg = OptimizeConfig.from_dict(payload["config"])
    threads = apply_threads(cfg.threads)
    rates: dict[str, float] = {}
    floor: dict[str, float] = {}
    with HostLoad() as load:
        if cfg.objective_spec()[0] is not None:
            a, b = load_model(cfg.model), load_model(cfg.model)
            rounds = run_ab(a, b, ABConfig(**cfg.ab_settings("screen")))
            rates = {k: sorted(v)[len(v) // 2] for k, v in rounds.a.items()}
            floor = noise_floor_from(compare_rounds(rounds))
    return {"threads": threads, "rates": rates, "screen_noise_floor_pct": floor, "host": load.result}


def measure_nodes(search: Any, reserve: float) -> list[dict[str, Any]]:
    """Driver: each node of a cluster search measures its own baseline, all at once, before any
    candidate runs there; their descriptions, rates and noise floors (empty on one machine)."""
    runner = search.runner
    if not runner.nodes:
        return []
    found: list[dict[str, Any]] = []
    jobs = []
    for node in list(runner.nodes):
        got = search.start_trial(f"node:{node}", NODE_BASELINE, {}, reserve)
        if isinstance(got, dict):
            found.append(_node_row(search, got))
        elif got is not None:
            got.node = node
            jobs.append(got)

    def finish(_item: Any, job: Any, outcome: Any, node: Any, lost: str) -> None:
        data = search.finish_trial(job, outcome, node, lost)
        if data is not None:
            found.append(_node_row(search, data))
            if data["status"] != "ok":  # a node that can't measure the model would fail every trial
                runner.drop(job.node, data.get("reason") or data["status"])

    runner.run_all(jobs, lambda job: job, finish)
    return found


def _node_row(search: Any, data: dict[str, Any]) -> dict[str, Any]:
    """One node's line in the result: who it is, its baseline rates and noise floor, and a log line."""
    result = data.get("result") or {}
    row = {
        **(data.get("node") or {"node_id": data["key"].split(":", 1)[1]}),
        "status": data["status"],
        "reason": data.get("reason", ""),
        "rates": result.get("rates", {}),
        "screen_noise_floor_pct": result.get("screen_noise_floor_pct", {}),
        "host_load": result.get("host"),
    }
    metric = search.cfg.objective_spec()[1]
    rate, noise = row["rates"].get(metric), row["screen_noise_floor_pct"].get(metric)
    measured = (
        f": {metric} {rate:.4g}, A-vs-A noise ±{noise:.1f}%" if rate is not None and noise is not None else ""
    )
    search.log(f"node {row.get('hostname', '?')} ({str(row['node_id'])[:12]}, {row.get('cpu')}){measured}")
    return row
