"""Statistics derived from raw samples: bootstrap CIs, per-metric summaries, A/B comparisons and goals."""

from __future__ import annotations

from unbottle.stats.bootstrap import as_samples, bootstrap_ci
from unbottle.stats.estimate import Estimate, hull, percent_change
from unbottle.stats.goals import (
    GOAL_KINDS,
    VERDICTS,
    Goal,
    GoalKind,
    GoalResult,
    MetricComparison,
    Verdict,
    check_goal,
    check_goals,
    verdict_of,
)
from unbottle.stats.paired import (
    mean_difference_paired,
    median_difference_paired,
    median_difference_unpaired,
    median_of_ratios,
    paired_bootstrap,
    ratio_of_medians_paired,
    ratio_of_medians_unpaired,
    relative_change_pooled,
)
from unbottle.stats.summary import Summary, summarize

__all__ = [
    "GOAL_KINDS",
    "VERDICTS",
    "Estimate",
    "Goal",
    "GoalKind",
    "GoalResult",
    "MetricComparison",
    "Summary",
    "Verdict",
    "as_samples",
    "bootstrap_ci",
    "check_goal",
    "check_goals",
    "hull",
    "mean_difference_paired",
    "median_difference_paired",
    "median_difference_unpaired",
    "median_of_ratios",
    "paired_bootstrap",
    "percent_change",
    "ratio_of_medians_paired",
    "ratio_of_medians_unpaired",
    "relative_change_pooled",
    "summarize",
    "verdict_of",
]
