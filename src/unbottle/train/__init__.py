"""``unbottle train``: training-side bottlenecks (issue 7). This step: the data pipeline."""
