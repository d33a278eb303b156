"""One call that runs every evaluation a config asks for, on one shared text."""

from __future__ import annotations

from collections.abc import Callable

from unbottle.core.errors import EvalError
from unbottle.core.naming import opt
from unbottle.evaluation.agreement import agreement
from unbottle.evaluation.base import EvalResult
from unbottle.evaluation.classifier import label_agreement
from unbottle.evaluation.config import EvalConfig
from unbottle.evaluation.corpus import default_text, load_text
from unbottle.evaluation.embedding import embedding_agreement
from unbottle.evaluation.multiple_choice import multiple_choice
from unbottle.evaluation.perplexity import perplexity
from unbottle.evaluation.pseudo_perplexity import pseudo_perplexity
from unbottle.models import load
from unbottle.sources.base import Loaded


def evaluate(
    loaded: Loaded,
    config: EvalConfig,
    reference_loaded: Loaded | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[EvalResult]:
    """Perplexity always; multiple-choice accuracy if ``config.task``; agreement if there is a reference.
    An encoder (a masked-LM model) gets its masked-LM head's pseudo-perplexity where its checkpoint
    carries the head, and its embeddings' agreement with the reference where there is one (it needs one
    of the two).

    Args:
        loaded: the model to evaluate.
        config: what to evaluate.
        reference_loaded: the reference model; if None and ``config.reference`` is set, it is loaded.
        progress: called as ``progress(evaluator, done, total)``: ``"perplexity"`` counts windows,
            ``"multiple-choice"`` (prompt, option) sequences.

    Returns:
        perplexity, then accuracy (with a task), then KL, top-1 and greedy match (with a reference).
    """
    text, description = load_text(config.eval_text) if config.eval_text else default_text()
    if reference_loaded is None and config.reference:
        reference_loaded = load(config.reference)
    if loaded.info.task != "causal-lm":
        return _encoder_results(loaded, config, reference_loaded, text, description)
    results = [
        perplexity(
            loaded,
            text,
            source=description,
            eval_tokens=config.eval_tokens,
            window=config.window,
            stride=config.stride,
            batch_size=config.batch_size,
            progress=_for(progress, "perplexity"),
            start_token=config.start_token,
        )
    ]
    if config.task:
        results.append(
            multiple_choice(
                loaded,
                config.task,
                max_items=config.max_items,
                length_normalize=config.length_normalize,
                batch_size=config.batch_size,
                progress=_for(progress, "multiple-choice"),
                part=config.item_part,
            )
        )
    if reference_loaded is not None:
        results += agreement(
            loaded, reference_loaded, text=text, eval_tokens=config.eval_tokens, window=config.window,
            stride=config.stride, batch_size=config.batch_size,
        )  # fmt: skip
    return results


def _encoder_results(
    loaded: Loaded, config: EvalConfig, reference: Loaded | None, text: str, description: str
) -> list[EvalResult]:
    """An encoder's evaluation: a masked LM's pseudo-perplexity (where the checkpoint has the head), a
    classifier's label agreement with the reference's (where both have the head), then its embeddings'
    agreement with the reference's (``embedding``)."""
    masked = loaded.info.task == "masked-lm"
    if reference is None and not (masked and loaded.info.head):
        saved = "saved without its masked-LM head" if masked else f"a {loaded.info.task} model"
        raise EvalError(
            f"{loaded.info.spec!r} is {saved}: it is evaluated by how closely its outputs (labels, "
            f"sentence embeddings) follow a reference's; give {opt('reference')} MODEL (e.g. the float "
            "model it was made from)"
        )
    window, out = min(config.window, 128), []
    both = loaded.info.head and (reference is None or reference.info.head)
    if masked and both:
        out.append(
            pseudo_perplexity(
                loaded, text, description, config.eval_tokens, window, config.batch_size, config.start_token
            )
        )
    if reference is not None and both and loaded.info.task == "sequence-classification":
        out += label_agreement(
            loaded, reference, text, description, config.eval_tokens, batch_size=max(8, config.batch_size),
            start_token=config.start_token,
        )  # fmt: skip
    if reference is not None:
        out.append(
            embedding_agreement(
                loaded,
                reference,
                text,
                description,
                config.eval_tokens,
                window,
                config.batch_size,
                config.start_token,
            )  # fmt: skip
        )
    return out


def _for(
    progress: Callable[[str, int, int], None] | None, evaluator: str
) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(evaluator, done, total)
