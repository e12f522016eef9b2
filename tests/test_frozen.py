"""``quick_init``: the hot frozen dataclasses built without ``object.__setattr__`` are the
same objects the generated ``__init__`` builds, and still frozen."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from botopt.core.base._frozen import quick_init
from botopt.core.signals._engines import Signal
from botopt.core.signals._gates import GateDecision, GateInput
from botopt.core.signals._pipeline import Own
from botopt.core.state._cooldowns import CooldownRecord

T = datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)


def _generated(cls: type) -> type:
    """The same fields as ``cls``, with the dataclass's own generated ``__init__``."""
    return dataclasses.make_dataclass(
        f"Generated{cls.__name__}",
        [(f.name, f.type, f) for f in dataclasses.fields(cls)], frozen=True)


@pytest.mark.parametrize("cls, args, kwargs", [
    (GateInput, ("BTCUSDT", T, "long", 0.5, 0.6, "TRENDING", 1.2), {}),
    (GateInput, ("BTCUSDT", T, "long", 0.5, None, "TRENDING", None), {"engine": "momentum"}),
    (GateDecision, (False,), {}),
    (GateDecision, (), {"passed": True, "reasons": ("x", "y")}),
    (CooldownRecord, ("ETHUSDT", "short", T), {}),
    (Signal, ("BTCUSDT", T, "momentum", "long", 0.7), {"reasons": ("r",)}),
    (Own, (), {"symbol": "A", "candle_time": T, "close": 1.5, "regime": "RANGING",
               "best": None, "p_up": None, "volume_z": 0.1, "block": None}),
])
def test_quick_init_builds_what_the_generated_init_builds(cls, args, kwargs):
    got = cls(*args, **kwargs)
    want = _generated(cls)(*args, **kwargs)
    assert dataclasses.asdict(got) == dataclasses.asdict(want)
    assert vars(got) == vars(want)  # the same fields set, defaults included
    assert got == cls(*args, **kwargs) and hash(got) == hash(cls(*args, **kwargs))
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(got, first, None)
    assert dataclasses.replace(got) == got


def test_quick_init_keeps_the_signature_and_its_errors():
    with pytest.raises(TypeError):
        CooldownRecord("A", "long")  # a field missing: refused, as the generated one does
    with pytest.raises(TypeError):
        GateDecision(True, (), "extra")
    with pytest.raises(TypeError):
        GateDecision(passed=True, nonsense=1)


def test_quick_init_refuses_what_it_does_not_support():
    @dataclasses.dataclass(frozen=True)
    class Factory:
        xs: list = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True)
    class Post:
        x: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class Slotted:
        x: int

    for cls in (Factory, Post, Slotted, int):
        with pytest.raises(TypeError, match="quick_init"):
            quick_init(cls)
