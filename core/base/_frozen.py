"""``quick_init``: a frozen dataclass's ``__init__`` without ``object.__setattr__``.

A frozen dataclass's generated ``__init__`` sets each field through
``object.__setattr__`` (its own ``__setattr__`` refuses), three times the cost of a plain
class's: 2.1 us against 0.7 us for eight fields. A replay makes about 350 such objects a
candle at 100 symbols (each symbol's answer, its signal, its gate input and decision), a
year of candles 35 million of them. ``quick_init`` writes the fields straight into the
instance's ``__dict__``, which is what ``object.__setattr__`` ends up doing; everything
else (equality, hashing, ``repr``, ``dataclasses.replace``, the refusal to assign later)
stays the dataclass's own."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def quick_init(cls: type[T]) -> type[T]:
    """Replace ``cls``'s generated ``__init__`` with one of the same signature that fills
    ``__dict__`` directly. For frozen dataclasses with ``__dict__`` (not slots), no
    ``__post_init__``, no ``default_factory`` and no keyword-only fields: anything else is
    refused at import, not half supported."""
    if not dataclasses.is_dataclass(cls) or "__slots__" in cls.__dict__ or \
            hasattr(cls, "__post_init__"):
        raise TypeError(f"quick_init: {cls.__name__} is not a plain frozen dataclass")
    params: list[str] = []
    lines: list[str] = []
    env: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"quick_init: {cls.__name__}.{f.name} is not a plain field")
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            env[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        lines.append(f"    d[{f.name!r}] = {f.name}")
    source = (f"def __init__(self, {', '.join(params)}):\n    d = self.__dict__\n"
              + "\n".join(lines) + "\n")
    ns: dict[str, Any] = {}
    exec(source, env, ns)  # noqa: S102  (source made above from the field names only)
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
