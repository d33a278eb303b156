"""``unbottle train`` (issue 7, in progress): the data pipeline and the single-process trainer.

Not yet: the CLI verb, DDP/FSDP through torchrun, the batch-size finder, strategy A/B, distillation.
"""
