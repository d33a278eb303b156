"""Everything unbottle ships to read: the packaged texts (public-domain Austen novels, see
``corpora/AUSTEN.md``), the BIG-bench tasks (``tasks/``), and the prompts made from them.

One text is held out for evaluation (``EVAL_TEXT``: *Persuasion*); calibration (activation
importance, static quantization ranges) and training read the others, never that one.
"""

from __future__ import annotations

import functools
from importlib import resources

CORPORA = "unbottle.data.corpora"
AUSTEN = "unbottle.data.corpora.austen"
EVAL_TEXT = "persuasion.txt"
EVAL_DESCRIPTION = "packaged corpus persuasion.txt (Jane Austen, Persuasion, 1818)"
CALIBRATION_TEXT = "pride_and_prejudice.txt"  # an Austen novel other than the evaluation text


@functools.lru_cache(maxsize=4)
def packaged_text(name: str = EVAL_TEXT) -> str:
    """A packaged text by file name: ``EVAL_TEXT`` (default) or one of the novels in ``austen/``."""
    package = CORPORA if name == EVAL_TEXT else AUSTEN
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")
