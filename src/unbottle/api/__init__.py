"""unbottle's verbs as Python functions, each recording its run in the store like the CLI does and
returning the JSON document the verb's ``--json`` prints (``report`` returns the file it wrote).

The CLI parses flags, shows progress and prints; the work is here. Settings are the fields of each
verb's config dataclass, given as keyword arguments or as the config itself.
"""

from unbottle.api.accuracy import evaluate
from unbottle.api.comparing import ab, compare
from unbottle.api.exporting import export_runs
from unbottle.api.hotspots import profile
from unbottle.api.learning import distill, train
from unbottle.api.reports import report
from unbottle.api.speed import bench
from unbottle.api.transform import apply
from unbottle.api.tuning import optimize

__all__ = [
    "ab", "apply", "bench", "compare", "distill", "evaluate", "export_runs", "optimize", "profile", "report",
    "train",
]  # fmt: skip
