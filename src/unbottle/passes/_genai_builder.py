"""Run ONNX Runtime GenAI's model builder with the config attributes it reads from transformers 4.

transformers 5 keeps Gemma 3's two RoPE bases only in ``rope_parameters`` (one entry per layer type);
the builder still reads ``rope_local_base_freq`` for the sliding-window layers and a top-level
``rope_type``. This entry point fills
that attribute in on every config ``AutoConfig`` returns, then hands over to the builder's own CLI:
``python -m unbottle.passes._genai_builder <builder arguments>``.
"""

from __future__ import annotations

import runpy
import sys
from typing import Any


def _with_compat(config: Any) -> Any:
    """Add what the builder reads and transformers 5 no longer sets (the config, changed in place)."""
    for c in (config, config.get_text_config()):
        rope = getattr(c, "rope_parameters", None)
        sliding = rope.get("sliding_attention") if isinstance(rope, dict) else None
        if not isinstance(sliding, dict):
            continue
        if not hasattr(c, "rope_local_base_freq"):
            c.rope_local_base_freq = sliding["rope_theta"]
        full = rope.get("full_attention") or {}
        c.rope_parameters = {**full, **rope}  # the global layers' rope_type/theta also at the top level
        if not hasattr(c, "rope_theta") and "rope_theta" in full:
            c.rope_theta = full["rope_theta"]
    return config


def main() -> None:
    import transformers

    original = transformers.AutoConfig.from_pretrained.__func__

    def from_pretrained(cls: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(cls, *args, **kwargs)
        _with_compat(result[0] if isinstance(result, tuple) else result)  # (config, unused) with kwargs
        return result

    transformers.AutoConfig.from_pretrained = classmethod(from_pretrained)
    sys.argv = ["onnxruntime_genai.models.builder", *sys.argv[1:]]
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__")


if __name__ == "__main__":
    main()
