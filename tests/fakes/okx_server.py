"""The fake OKX API lives with the benchmarks, beside the fake Binance (one loopback server)."""

from botopt.benchmarks.fake_okx import FakeOkx

__all__ = ["FakeOkx"]
