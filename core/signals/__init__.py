"""The signal stages: features, regimes, engines, model, gates, correlation, pipeline.

Private: import the public API from ``botopt.core``."""
