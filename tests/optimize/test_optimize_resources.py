"""A model's memory is measured in a process that only loads and runs it (issue 16, item 7)."""

from __future__ import annotations

import numpy as np
import pytest

from unbottle.optimizer.config import OptimizeConfig
from unbottle.optimizer.trial import fresh_resources


def test_memory_is_measured_in_a_fresh_process_unaffected_by_this_ones_history():
    cfg = OptimizeConfig(model="tiny-llama", threads=1)
    hog = np.ones(1536 * 2**20 // 8)  # 1.5 GiB resident here: must not show in the model's figure
    fresh = fresh_resources(cfg, "tiny-llama")
    assert fresh["peak_rss_mib"] < hog.nbytes / 2**20
    assert fresh["weights_mib"] > 0 and fresh["peak_rss_mib"] > fresh["weights_mib"], fresh


def test_a_model_that_fails_to_load_in_the_fresh_process_says_which(tmp_path):
    cfg = OptimizeConfig(model="tiny-llama", threads=1)
    with pytest.raises(RuntimeError, match="fresh process"):
        fresh_resources(cfg, str(tmp_path / "missing"))
