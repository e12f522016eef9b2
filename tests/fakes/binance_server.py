"""The fake Binance API lives with the benchmarks, beside the fake Bot API (one loopback server)."""

from botopt.benchmarks.fake_binance import FakeBinance, kline_row, rows_from_frame

__all__ = ["FakeBinance", "kline_row", "rows_from_frame"]
