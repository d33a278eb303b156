"""Accuracy evaluators: perplexity, multiple-choice accuracy, agreement with a reference model."""

from unbottle.evaluate.base import EvalResult

__all__ = ["EvalResult"]
