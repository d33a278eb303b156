"""The unit of evidence: every raw sample of one metric, with its unit and the scenario that made it.

A mean alone is never stored; percentiles and confidence intervals are derived from ``samples``
when needed (``unbottle.stats.summarize(m.samples)``), so any later comparison can be paired and re-derived.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Measurement:
    """Raw samples of one metric.

    Attributes:
        name: metric name, e.g. ``"decode.token_latency"``.
        unit: unit of every sample, e.g. ``"s"``, ``"tokens/s"``, ``"MiB"``, ``"%"``.
        samples: every raw sample, in the order measured.
        higher_is_better: direction of improvement (latency: False, throughput: True).
        scenario: the scenario that produced it, e.g. ``"decode"``.
        params: scenario parameters that distinguish it, e.g. ``{"batch_size": 4}``.
    """

    name: str
    unit: str
    samples: list[float]
    higher_is_better: bool = False
    scenario: str = ""
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        """Human label with parameters, e.g. ``decode.token_latency[batch_size=4]``."""
        if not self.params:
            return self.name
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}[{inner}]"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        return cls(**data)
