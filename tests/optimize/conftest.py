"""A stand-in for the search's workers, for tests of what the search decides rather than measures.

``fake_workers`` replaces ``unbottle.optimizer.isolate.run_isolated``: a baseline returns canned timings
and host load (quiet unless told otherwise), every candidate trial fails at once, and each call is
kept. Planning, refusing, and the busy-host checks then run in milliseconds on any host.
"""

from __future__ import annotations

import time

import pytest

from unbottle.optimizer.isolate import TrialOutcome
from unbottle.store import Store


def _eval(metric: str = "perplexity") -> dict:
    return {
        "evaluator": "perplexity",
        "metric": metric,
        "value": 30.0,
        "higher_is_better": False,
        "score_name": "window_nll",
        "score_unit": "nats/token",
        "scores": [3.4],
        "sample_ids": ["tokens[0:512]"],
        "weights": [511.0],
    }


class FakeWorkers:
    """Canned worker outcomes. ``busy``: one flag per baseline measurement (missing: quiet)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.called_at: list[float] = []  # time.monotonic() of each call
        self.busy: list[bool] = []
        self.baseline_s = 20.0
        self.timings = {"load_s": 2.0, "reload_s": 0.5, "screen_ab_s": 2.0}
        self.eval_s = {"screen": 1.0, "full": 4.0}

    def functions(self) -> list[str]:
        return [name for name, _ in self.calls]

    def __call__(self, target, payload, timeout_s, memory_limit_mib=None, poll_s=0.05) -> TrialOutcome:
        name = target.rsplit(":", 1)[1]
        self.calls.append((name, payload))
        self.called_at.append(time.monotonic())
        if name == "baseline":
            busy = self.busy.pop(0) if self.busy else False
            return TrialOutcome("ok", result=self.baseline_result(busy), seconds=self.baseline_s)
        if name == "fill_caches":
            return TrialOutcome("ok", result=self.filled(payload), seconds=30.0)
        return TrialOutcome("failed", reason="RuntimeError: a fake trial", seconds=0.1)

    def filled(self, payload: dict) -> dict:
        """As ``prepare.fill_caches``: one export folder (with its ``export.json``) per setting."""
        exports = []
        for i, settings in enumerate(payload["onnx"]):
            folder = Store().root / "fake-onnx" / str(i)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "export.json").write_text("{}")
            exports.append({"settings": settings, "folder": str(folder), "reused": False, "seconds": 29.0})
        return {"load_s": 1.0, "converted": False, "exports": exports}

    def baseline_result(self, busy: bool) -> dict:
        return {
            "model": {"name": "tiny-llama"},
            "threads": {"torch_num_threads": 2},
            **self.timings,
            "evals": {"screen": [_eval()], "full": [_eval()]},
            "eval_s": dict(self.eval_s),
            "rates": {"decode.tokens_per_s": 10.0},
            "screen_noise_pct": {"decode.tokens_per_s": 1.0},
            "screen_noise_floor_pct": {"decode.tokens_per_s": 2.0},
            "host": {"cpus": 2, "others_cores": 2.0 if busy else 0.1, "loadavg_1m": 0.5, "seconds": 15.0},
            "weights_mib": 0.5,
            "peak_rss_mib": 400.0,
        }


@pytest.fixture
def fake_workers(monkeypatch) -> FakeWorkers:
    fake = FakeWorkers()
    monkeypatch.setattr("unbottle.optimizer.isolate.run_isolated", fake)
    monkeypatch.setattr("unbottle.optimizer.baseline.REMEASURE_PAUSE_S", 0.0)
    return fake
