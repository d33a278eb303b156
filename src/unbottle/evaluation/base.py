"""What an evaluator returns: per-sample scores, so every accuracy comparison can be paired.

A corpus perplexity or a task accuracy alone cannot say whether a change is noise; the per-window
and per-item scores can (paired bootstrap over the same windows/items, in ``unbottle.stats``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from unbottle.core.measurement import Measurement


@dataclasses.dataclass
class EvalResult:
    """One metric of one evaluator on one model.

    Attributes:
        evaluator: ``perplexity``, ``multiple-choice`` or ``agreement``.
        metric: the headline metric, e.g. ``perplexity``, ``accuracy``, ``kl_divergence``.
        value: its corpus/task-level value (e.g. exp(total NLL / total tokens)).
        higher_is_better: direction of the headline metric.
        score_name: what one per-sample score is, e.g. ``window_nll`` or ``item_correct``; scores
            improve in the same direction as the headline metric.
        score_unit: its unit, e.g. ``nats/token``, ``0/1``.
        scores: one score per sample (window, item, prompt), in ``sample_ids`` order.
        sample_ids: stable ids of the samples, so two results pair up sample by sample.
        weights: per-sample weights for pooled statistics (e.g. scored tokens per window), or None.
        seconds: wall time of the evaluation.
        details: how it was computed (corpus, eval_tokens, window, stride, bos_prepended, task, ...).
    """

    evaluator: str
    metric: str
    value: float
    higher_is_better: bool
    score_name: str
    score_unit: str
    scores: list[float]
    sample_ids: list[str]
    weights: list[float] | None = None
    seconds: float = 0.0
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        return cls(**data)

    def to_measurement(self) -> Measurement:
        """The per-sample scores as a stored measurement (``eval.<metric>.<score_name>``)."""
        params = {k: v for k, v in self.details.items() if isinstance(v, (int, float, str, bool))}
        return Measurement(
            name=f"eval.{self.metric}.{self.score_name}",
            unit=self.score_unit,
            samples=list(self.scores),
            higher_is_better=self.higher_is_better,
            scenario="eval",
            params=params,
        )
