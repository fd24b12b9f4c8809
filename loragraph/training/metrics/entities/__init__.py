"""Package marker so the metric script ships as package data; load it with `loragraph.training.metrics.load_metric`."""
