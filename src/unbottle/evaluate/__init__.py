"""Accuracy evaluators: perplexity, multiple-choice accuracy, agreement with a reference model.

Each returns ``EvalResult`` objects that keep one score per window, item or prompt, with stable
sample ids, so two models' results can be compared pairwise (``unbottle.stats``).
"""

from unbottle.evaluate.agreement import agreement
from unbottle.evaluate.base import EvalResult
from unbottle.evaluate.config import EvalConfig
from unbottle.evaluate.corpus import load_text
from unbottle.evaluate.multiple_choice import multiple_choice
from unbottle.evaluate.perplexity import perplexity
from unbottle.evaluate.suite import evaluate
from unbottle.evaluate.tasks import TASKS, Task, load_task

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
