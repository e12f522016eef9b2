"""The backtest layer (above signals): the pipeline replayed over history."""
