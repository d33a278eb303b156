"""A distillation run end to end (what ``unbottle distill`` records): teacher, student, the distilled
and the plain (no-distill) runs from the same initial student, held-out perplexity of all of them on
the same windows, the saved student.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unbottle.comparison.accuracy import compare_eval, pooled_value
from unbottle.core.errors import ConfigError
from unbottle.core.naming import given, opt
from unbottle.evaluation.perplexity import perplexity
from unbottle.models import resolve
from unbottle.sources.base import Loaded, check_length, count_parameters, require_causal_lm
from unbottle.training.distill import (
    DistillLoss,
    build_student,
    check_same_tokenizer,
    is_shape_spec,
    parse_shape,
)
from unbottle.training.session import datasets, load_trainable, steps_task
from unbottle.training.spec import TrainSpec
from unbottle.training.trainer import Trainer

PURPOSE = "unbottle distill distils causal language models"


@dataclasses.dataclass(frozen=True)
class DistillSettings:
    """The distillation-specific settings (the training ones are a ``TrainConfig``)."""

    student: str = "half"
    alpha: float = 0.5
    temperature: float = 2.0
    baseline: bool = True
    eval_text: str | None = None
    eval_tokens: int = 8192
    window: int = 512


def make_student(teacher: Any, spec: str) -> tuple[Any, dict[str, Any]]:
    """(student model, description): a shape built from the teacher's layers, or a loaded model."""
    cfg = teacher.model.config
    if is_shape_spec(spec):
        layers = getattr(cfg, "num_hidden_layers", None)
        if not layers:
            raise ConfigError(f"{teacher.info.spec!r} has no num_hidden_layers; give --student MODEL")
        shape = parse_shape(spec, layers, getattr(cfg, "intermediate_size", None))
        student = build_student(teacher.model, shape)
        return student, {"spec": spec, "from_teacher_layers": list(shape.layers),
                         "intermediate": student.config.intermediate_size}  # fmt: skip
    loaded = require_causal_lm(resolve(spec).load(), spec, PURPOSE)
    check_same_tokenizer(teacher, loaded, spec)
    return loaded.model, {"spec": spec, "loaded": True}


def _as_loaded(model: Any, teacher: Any, label: str) -> Any:
    info = dataclasses.replace(
        teacher.info, spec=label, source_kind="distilled", n_parameters=count_parameters(model), notes=[]
    )
    return Loaded(model.eval(), teacher.tokenizer, info)


def _perplexity(loaded: Any, s: DistillSettings, progress: Any = None, name: str = "") -> Any:
    report = progress.counter(f"perplexity of the {name}", "windows") if progress and name else None
    with torch.no_grad():
        return perplexity(
            loaded,
            source=s.eval_text,
            eval_tokens=s.eval_tokens,
            window=s.window,
            stride=s.window,
            progress=report,
        )


def run_distill(spec: TrainSpec, s: DistillSettings, say: Any, progress: Any = None) -> dict[str, Any]:
    """Distil ``spec.model`` (the teacher) and measure; ``progress`` (a ``reporting.progress.Progress``) draws
    the evaluations and steps."""
    cfg, loader, out = spec.train, spec.loader, spec.output
    say(f"loading teacher {spec.model} …")
    teacher = load_trainable(spec.model, PURPOSE)
    check_length(teacher, spec.seq_len, given("seq_len", spec.seq_len), f"lower {opt('seq_len')}")
    student, described = make_student(teacher, s.student)
    train_ds, _ = datasets(spec.data, spec.seq_len, "cache", teacher.tokenizer)
    plain = copy.deepcopy(student) if s.baseline else None
    say("held-out perplexity of the teacher and of the untrained student …")
    evals = {
        "teacher": _perplexity(teacher, s, progress, "teacher"),
        "initial student": _perplexity(
            _as_loaded(student, teacher, "initial"), s, progress, "initial student"
        ),
    }
    trainers = _trainers(student, plain, teacher, train_ds, cfg, loader, out, s)
    resumed = {name: t.step for name, t in trainers.items() if spec.resume and t.resume()}
    _train_interleaved(trainers, cfg, progress)
    for name, model in (("distilled", student), ("no-distill", plain)):
        if model is not None:
            label = f"{name} student"
            evals[label] = _perplexity(_as_loaded(model, teacher, name), s, progress, label)
    saved = _save(trainers, {"distilled": student, "no-distill": plain}, teacher, out)
    return _document(teacher, student, described, evals, trainers, resumed, saved, s)


def _trainers(student, plain, teacher, train_ds, cfg, loader, out, s) -> dict[str, Any]:
    objective = DistillLoss(student, teacher.model, s.alpha, s.temperature, cfg.autocast_dtype())
    trainers = {"distilled": Trainer(student, train_ds, cfg, loader, out / "distilled", objective=objective)}
    if plain is not None:
        trainers["no-distill"] = Trainer(plain, train_ds, cfg, loader, out / "no-distill")
    return trainers


def _train_interleaved(trainers: dict[str, Any], cfg: Any, progress: Any = None) -> None:
    """Alternate chunks of steps, so both runs see the machine alike (their tokens/s compare).

    With ``progress``, each run has its own bar over ``max_steps``.
    """
    chunk = max(1, min(10, cfg.max_steps // 5))
    on_step = {
        name: steps_task(progress, f"training {name}", cfg.max_steps, t.step) for name, t in trainers.items()
    }
    while any(t.step < cfg.max_steps for t in trainers.values()):
        for name, t in trainers.items():
            if t.step < cfg.max_steps:
                t.train(steps=chunk, on_step=on_step[name])


FOLDERS = {"distilled": "student", "no-distill": "no-distill-student"}


def _save(trainers: dict[str, Any], models: dict[str, Any], teacher: Any, out: Path) -> dict[str, str]:
    """Last checkpoints, and each student as a Hugging Face folder with the teacher's tokenizer."""
    saved = {}
    for name, trainer in trainers.items():
        trainer.save()
        folder = out / FOLDERS[name]
        models[name].save_pretrained(folder)
        teacher.tokenizer.save_pretrained(folder)
        saved[name] = str(folder)
    return saved


def _document(teacher, student, described, evals, trainers, resumed, saved, s) -> dict[str, Any]:
    models = {
        name: {"perplexity": r.value, "ci95": list(pooled_ci(r)), "seconds": r.seconds}
        for name, r in evals.items()
    }
    models["teacher"]["parameters"] = count_parameters(teacher.model)
    for name in ("initial student", "distilled student", "no-distill student"):
        if name in models:
            models[name]["parameters"] = count_parameters(student)
    distilled = evals["distilled student"]
    comparisons = {"distilled vs teacher": compare_eval(evals["teacher"], distilled).to_dict()}
    if "no-distill student" in evals:
        comparisons["distilled vs no-distill"] = compare_eval(
            evals["no-distill student"], evals["distilled student"]
        ).to_dict()
    runs = {
        name: {
            "steps": t.step,
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in t.history),
            "history": t.history,
            "resumed_from": resumed.get(name, 0),
        }
        for name, t in trainers.items()
    }
    return {
        "student": {**described, "layers": student.config.num_hidden_layers},
        "teacher": teacher.info.to_dict(),
        "settings": dataclasses.asdict(s),
        "eval": evals["teacher"].details,
        "models": models,
        "comparisons": comparisons,
        "runs": runs,
        "saved": saved,
        "measurements": [
            dataclasses.replace(r.to_measurement(), params={**r.to_measurement().params, "model": name})
            for name, r in evals.items()
        ],
    }


def pooled_ci(result: Any) -> tuple[float, float]:
    """The perplexity's 95% CI (bootstrap over windows)."""
    w = np.asarray(result.weights or [1.0] * len(result.scores), dtype=float)
    est = pooled_value(np.asarray(result.scores, dtype=float), w, "perplexity")
    return est.ci_low, est.ci_high
