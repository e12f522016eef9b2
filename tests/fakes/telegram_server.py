"""The fake Bot API lives with the benchmarks (installed, so `botopt bench` can use it)."""

from botopt.benchmarks.fake_telegram import FakeTelegram, VirtualClock, parse_entities

__all__ = ["FakeTelegram", "VirtualClock", "parse_entities"]
