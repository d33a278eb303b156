"""Optimisation passes: each a versioned config plus a registered handler, applied by one verb.

``apply_(loaded, [parse_pass("wo-int8:exclude=lm_head"), parse_pass("compile")])`` returns the new
model and a report per pass; ``PASSES`` lists every pass; ``save``/``load`` keep the recipe.
"""

from unbottle.passes.apply import apply_, check_composition, check_supported, unavailable
from unbottle.passes.base import Applied, PassConfig, PassContext, PassReport, Requirements, handler
from unbottle.passes.registry import PASSES, config_class, describe_params, parse_pass

__all__ = [
    "PASSES",
    "Applied",
    "PassConfig",
    "PassContext",
    "PassReport",
    "Requirements",
    "apply_",
    "check_composition",
    "check_supported",
    "config_class",
    "describe_params",
    "handler",
    "parse_pass",
    "unavailable",
]
