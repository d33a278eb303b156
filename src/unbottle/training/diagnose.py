"""What bounds a training run, read off its step-time breakdown: data loading, communication, the
optimiser, or the model's own compute (then the precision and loss options are the levers).

Each finding names the measured share of step time and what to try (settings named as the caller
gives them: ``precision=bf16`` from Python, ``--precision bf16`` from the CLI); ``compare`` measures
the fix.
"""

from __future__ import annotations

from typing import Any

from unbottle.core.naming import given, opt

DATA_BOUND = 0.10  # share of step time waiting for batches
COMM_BOUND = 0.20  # all-reduce time in flight, as a share of step time
OPTIMIZER_BOUND = 0.20


def diagnose(summary: dict[str, Any], cfg: Any, data_mode: str, workers: int) -> list[dict[str, Any]]:
    """Findings, largest share first: ``{"bound", "share", "text", "try"}``."""
    b = summary["breakdown"]
    found = []
    if b.get("data_s", 0) >= DATA_BOUND:
        fixes = ([given("data_mode", "cache")] if data_mode == "on-the-fly" else []) + (
            [given("workers", 2)] if workers == 0 else []
        )
        found.append(_finding("data", b["data_s"], "of each step waits for the next batch", fixes))
    if summary.get("comm_share", 0) >= COMM_BOUND:
        found.append(
            _finding(
                "communication",
                summary["comm_share"],
                "of each step has gradients in flight",
                [f"{given('grad_accum', 2)} (fewer all-reduces per sample)", given("parallel", "fsdp")],
            )  # fmt: skip
        )
    if b.get("optimizer_s", 0) >= OPTIMIZER_BOUND:
        found.append(
            _finding(
                "optimizer",
                b["optimizer_s"],
                "of each step is the optimiser update",
                [f"{given('grad_accum', 2)} or a larger {opt('batch_size')} (one update per more tokens)"],
            )  # fmt: skip
        )
    compute = b.get("forward_s", 0) + b.get("backward_s", 0)
    fixes = []
    if cfg.precision == "fp32":
        fixes.append(given("precision", "bf16"))
    if cfg.loss == "full":
        fixes.append(given("loss", "fused"))
    if not cfg.compile:
        fixes.append(given("compile", True))
    found.append(_finding("compute", compute, "of each step is forward + backward", fixes))
    return sorted(found, key=lambda f: -f["share"])


def _finding(bound: str, share: float, what: str, fixes: list[str]) -> dict[str, Any]:
    return {"bound": bound, "share": share, "text": f"{share:.0%} {what}", "try": fixes}
