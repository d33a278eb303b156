"""``unbottle optimize``: the closed loop from a baseline to a verified, saved, faster model.

``OptimizeConfig`` says what to search (objective, accuracy guard, budget, candidates); ``Search``
runs it, each trial in an isolated worker, recording every trial in the store so a re-run resumes.
"""

from unbottle.optimizer.config import OptimizeConfig
from unbottle.optimizer.search import Search

__all__ = ["OptimizeConfig", "Search"]
