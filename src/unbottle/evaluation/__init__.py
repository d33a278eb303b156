"""Accuracy evaluators: perplexity, multiple-choice accuracy, agreement with a reference model.

Each returns ``EvalResult`` objects that keep one score per window, item or prompt, with stable
sample ids, so two models' results can be compared pairwise (``unbottle.stats``).
"""

from unbottle.evaluation.agreement import agreement
from unbottle.evaluation.base import EvalResult
from unbottle.evaluation.config import EvalConfig
from unbottle.evaluation.corpus import load_text
from unbottle.evaluation.multiple_choice import multiple_choice
from unbottle.evaluation.perplexity import perplexity
from unbottle.evaluation.suite import evaluate
from unbottle.evaluation.tasks import TASKS, Task, load_task

__all__ = [
    "TASKS",
    "EvalConfig",
    "EvalResult",
    "Task",
    "agreement",
    "evaluate",
    "load_task",
    "load_text",
    "multiple_choice",
    "perplexity",
]
