"""Models run by an inference runtime behind the interface of a transformers causal LM.

``OrtCausalLM`` runs a graph exported with its KV cache (``unbottle.passes.onnx``) in ONNX
Runtime; bench scenarios and evaluators call it exactly as they call a torch model.
"""

from unbottle.runtime.ort_model import OrtCausalLM

__all__ = ["OrtCausalLM"]
