"""A sequence classifier is evaluated by whether it keeps its reference's labels: the top label and the
label distribution's KL per window, paired; its task and head are read from the checkpoint."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from unbottle.core.errors import EvalError
from unbottle.evaluation import EvalConfig, evaluate
from unbottle.evaluation.classifier import label_agreement
from unbottle.models import load
from unbottle.sources import Loaded
from unbottle.sources.hf_folder import HFFolderSource

TEXT = "It was a bright cold day in April, and the clocks were striking thirteen. " * 40


@pytest.fixture(scope="module")
def classifier():
    return load("tiny-bert-classifier")


def _perturbed(loaded: Loaded, scale: float) -> Loaded:
    model = copy.deepcopy(loaded.model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return Loaded(model, loaded.tokenizer, loaded.info)


def test_a_classifier_keeps_its_own_labels_and_a_perturbed_copy_fewer(classifier):
    same, same_kl = label_agreement(classifier, classifier, TEXT, eval_tokens=512)
    assert same.metric == "label_agreement" and len(same.scores) == 16 and same.value == 1.0
    assert same_kl.metric == "label_kl" and same_kl.value == 0.0 and not same_kl.higher_is_better
    small = label_agreement(_perturbed(classifier, 0.01), classifier, TEXT, eval_tokens=512)
    large = label_agreement(_perturbed(classifier, 0.5), classifier, TEXT, eval_tokens=512)
    assert small[0].sample_ids == same.sample_ids
    assert 0.0 < small[1].value < large[1].value  # the distributions drift before labels flip
    assert large[0].value < 1.0 and all(s in (0.0, 1.0) for s in large[0].scores)


def test_evaluate_gives_a_classifier_labels_and_embeddings_against_a_reference_it_needs(classifier):
    metrics = [r.metric for r in evaluate(classifier, EvalConfig(eval_tokens=512), classifier)]
    assert metrics == ["label_agreement", "label_kl", "embedding_cosine"]
    with pytest.raises(EvalError, match="a sequence-classification model.*give reference MODEL"):
        evaluate(classifier, EvalConfig(eval_tokens=512))
    info = dataclasses.replace(classifier.info, head=False)
    headless = Loaded(classifier.model, classifier.tokenizer, info)
    only = evaluate(headless, EvalConfig(eval_tokens=512), classifier)
    assert [r.metric for r in only] == ["embedding_cosine"]
    with pytest.raises(EvalError, match="its head random"):
        label_agreement(headless, classifier, TEXT)
    other = load("tiny-bert-classifier")
    other.model.config.num_labels = 5
    with pytest.raises(EvalError, match="has 5 labels and reference 'tiny-bert-classifier' 3"):
        label_agreement(other, classifier, TEXT)


def test_a_saved_classifier_loads_as_one_with_its_head(classifier, tmp_path: Path):
    classifier.model.save_pretrained(tmp_path / "classifier")
    classifier.model.bert.save_pretrained(tmp_path / "encoder")
    saved = HFFolderSource(tmp_path / "classifier")
    assert saved.task == "sequence-classification" and saved.probe_head()
    loaded = saved.load()
    assert type(loaded.model).__name__ == "BertForSequenceClassification" and loaded.info.head
    assert HFFolderSource(tmp_path / "encoder").task == "masked-lm"  # saved as BertModel
