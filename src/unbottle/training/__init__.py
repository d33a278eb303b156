"""Training-side bottlenecks: the data pipeline (token cache, resumable loader), the trainer (precision,
fused loss, compile, activation checkpointing, DDP/FSDP, atomic checkpoints), the batch-size finder,
the strategy A/B, the step-time diagnosis, and knowledge distillation (``unbottle train`` / ``distill``).
"""
