"""Statistics derived from raw samples: bootstrap confidence intervals and per-metric summaries."""

from __future__ import annotations

from unbottle.stats.bootstrap import as_samples, bootstrap_ci
from unbottle.stats.summary import Summary, summarize

__all__ = ["Summary", "as_samples", "bootstrap_ci", "summarize"]
