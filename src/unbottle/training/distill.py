"""Knowledge distillation: a smaller student built from the teacher's own layers, trained to match the
teacher's next-token distributions (KL on temperature-softened logits) as well as the data (CE).

A student spec is ``half`` (every other decoder layer, first and last kept), ``layers=N`` (N layers
spread evenly over the teacher's depth), optionally with ``intermediate=M`` (each kept MLP narrowed
to the M hidden units of largest weight norm), e.g. ``layers=15,intermediate=1024``. The student is a
model of the teacher's own class and config (fewer layers, narrower MLP), so it saves and loads like
any Hugging Face model, and every unbottle verb takes it. Embeddings, final norm and output layer are
the teacher's. An existing model can be the student instead; its tokenizer must be the teacher's.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

import torch

from unbottle.core.errors import ConfigError
from unbottle.core.naming import given
from unbottle.training.data import tokenizer_fingerprint
from unbottle.training.losses import autocast

_SPEC = re.compile(r"^(half|layers=\d+)(,intermediate=\d+)?$|^intermediate=\d+$")


@dataclasses.dataclass(frozen=True)
class StudentShape:
    """Which teacher layers the student keeps, and its MLP width (None: the teacher's)."""

    layers: tuple[int, ...]
    intermediate: int | None = None


def is_shape_spec(text: str) -> bool:
    return bool(_SPEC.match(text.replace(" ", "")))


def parse_shape(text: str, n_layers: int, intermediate: int | None) -> StudentShape:
    """``half`` / ``layers=N`` / ``intermediate=M`` (comma-joined) against a teacher's sizes."""
    parts = dict(p.split("=") if "=" in p else (p, "") for p in text.replace(" ", "").split(","))
    keep = n_layers // 2 if "half" in parts else int(parts.get("layers", n_layers))
    width = int(parts["intermediate"]) if "intermediate" in parts else None
    if not 1 <= keep <= n_layers:
        raise ConfigError(
            f"{given('student', text, quote=True)}: layers={keep}; allowed: 1 to the teacher's {n_layers}"
        )
    if width is not None and (intermediate is None or not 1 <= width <= intermediate):
        raise ConfigError(
            f"{given('student', text, quote=True)}: intermediate={width}; allowed: 1 to the teacher's MLP "
            f"width {intermediate}"
        )
    if keep == n_layers and width in (None, intermediate):
        raise ConfigError(
            f"{given('student', text, quote=True)} is as large as the teacher; give fewer layers or a "
            "narrower MLP"
        )
    if keep == 1:
        return StudentShape((n_layers - 1,), width)
    step = (n_layers - 1) / (keep - 1)
    return StudentShape(tuple(round(i * step) for i in range(keep)), width)


def _decoder_layers(model: Any) -> Any:
    layers = getattr(getattr(model, model.base_model_prefix, None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ConfigError(
            f"{type(model).__name__} keeps no decoder layer list where unbottle looks "
            f"(model.<base>.layers); distil it into an existing model with {given('student', 'MODEL')}"
        )
    return layers


def build_student(teacher: Any, shape: StudentShape) -> Any:
    """A copy of ``teacher`` with only ``shape.layers`` (renumbered) and, if asked, narrower MLPs."""
    student = copy.deepcopy(teacher)
    layers = _decoder_layers(student)
    kept = torch.nn.ModuleList([layers[i] for i in shape.layers])
    getattr(student, student.base_model_prefix).layers = kept
    cfg = student.config
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in shape.layers]
    cfg.num_hidden_layers = len(shape.layers)
    for new_index, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index  # the KV cache is indexed by position in the stack
    if shape.intermediate is not None:
        for layer in kept:
            _narrow_mlp(layer, shape.intermediate)
        cfg.intermediate_size = shape.intermediate
    return student


def _narrow_mlp(layer: Any, width: int) -> None:
    """Keep the ``width`` MLP units with the largest product of their gate, up and down weight norms."""
    mlp = getattr(layer, "mlp", None)
    names = ("gate_proj", "up_proj", "down_proj")
    if mlp is None or not all(isinstance(getattr(mlp, n, None), torch.nn.Linear) for n in names):
        raise ConfigError("intermediate=: this architecture's MLP is not gate/up/down Linear layers")
    gate, up, down = (getattr(mlp, n) for n in names)
    with torch.no_grad():
        score = gate.weight.norm(dim=1) * up.weight.norm(dim=1) * down.weight.norm(dim=0)
        keep = torch.topk(score, width).indices.sort().values
        for lin in (gate, up):
            lin.weight = torch.nn.Parameter(lin.weight[keep].clone())
            lin.out_features = width
            if lin.bias is not None:
                lin.bias = torch.nn.Parameter(lin.bias[keep].clone())
        down.weight = torch.nn.Parameter(down.weight[:, keep].clone())
        down.in_features = width


def check_same_tokenizer(teacher: Any, student: Any, student_spec: str) -> None:
    """Refuse a student whose tokenizer or vocabulary differs from the teacher's."""
    same = tokenizer_fingerprint(teacher.tokenizer) == tokenizer_fingerprint(student.tokenizer)
    sizes = [m.model.get_output_embeddings().weight.shape[0] for m in (teacher, student)]
    if not same or sizes[0] != sizes[1]:
        raise ConfigError(
            f"student {student_spec!r} has another tokenizer than teacher {teacher.info.spec!r} "
            f"(output vocabularies {sizes[1]} vs {sizes[0]}); their distributions don't align: give a "
            f"student of the teacher's family, or a shape such as {given('student', 'half')}"
        )


class DistillLoss(torch.nn.Module):
    """``alpha`` × T² × KL(teacher ‖ student) on logits softened by temperature T, plus (1 − ``alpha``)
    × next-token CE. The teacher runs without gradients and is not a submodule (nothing trains,
    wraps or saves it); ``parts`` holds the last call's CE and KL."""

    def __init__(
        self, student: Any, teacher: Any, alpha: float, temperature: float, dtype: Any = None
    ) -> None:
        super().__init__()
        if not 0 <= alpha <= 1 or temperature <= 0:
            raise ConfigError(
                f"{given('alpha', alpha)} / {given('temperature', temperature)} given; allowed: "
                "0 <= alpha <= 1, temperature > 0"
            )
        self.lm, self.alpha, self.temperature, self.dtype = student, alpha, temperature, dtype
        object.__setattr__(self, "teacher", teacher.eval().requires_grad_(False))
        self.parts: dict[str, float] = {}

    def forward(self, batch: Any) -> Any:
        inputs, targets = batch[:, :-1], batch[:, 1:].flatten()
        with autocast(batch.device, self.dtype):
            student = self.lm(input_ids=inputs).logits.float().flatten(0, 1)
            with torch.no_grad():
                teacher = self.teacher(input_ids=inputs).logits.float().flatten(0, 1)
        ce = torch.nn.functional.cross_entropy(student, targets)
        t = self.temperature
        kl = torch.nn.functional.kl_div(
            torch.log_softmax(student / t, -1),
            torch.log_softmax(teacher / t, -1),
            log_target=True,
            reduction="batchmean",
        ) * (t * t)
        self.parts = {"ce": float(ce.detach()), "kl": float(kl.detach())}
        return self.alpha * kl + (1 - self.alpha) * ce
