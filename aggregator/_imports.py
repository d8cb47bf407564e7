"""Start-up: keep optional modules other libraries pull in at import time out
of the process when the aggregator never uses them.

httpcore imports ``trio`` whenever it is installed (for async code; the
aggregator is synchronous), and with it ``attrs`` and ``platform``: about
0.1 s of every ``aggregator update``, a poll that gets only 304s included;
likewise ``anyio`` (1.5 ms), which only its async connection pools use.
httpx imports ``click`` for its own command line, which it then cannot use
without ``rich``. ``load_without`` imports the given modules while those names
are hidden (``sys.modules[name] = None`` makes ``import name`` raise
ImportError, which both libraries expect and handle), then unhides them, so any
other code in the process can still import them as usual. Names already
imported are left alone.

A module that bound a hidden name to None (httpcore binds ``anyio`` and
``trio`` so, then tells an async caller to install them) gets a stand-in that
imports the real module at its first use instead: httpx's AsyncClient still
works in the same process (under asyncio or trio), it just pays the import
when it is first used.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Iterable
from typing import Any


def load_without(hidden: Iterable[str], modules: Iterable[str]) -> None:
    """Import ``modules`` (unless already imported) with ``hidden`` unimportable."""
    todo = [m for m in modules if m not in sys.modules]
    if not todo:
        return
    hide = [name for name in hidden if name not in sys.modules]
    for name in hide:
        sys.modules[name] = None  # type: ignore[assignment]
    before = set(sys.modules)
    try:
        for module in todo:
            importlib.import_module(module)
    finally:
        for name in hide:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    loaded = [m for name, m in list(sys.modules.items()) if name not in before
              and name.split(".")[0] in todo and m is not None]
    for module in loaded:
        for name in hide:
            if vars(module).get(name, 0) is None and importlib.util.find_spec(name):
                setattr(module, name, _Later(name))


class _Later(types.ModuleType):
    """A hidden module, imported when it is first used (see the docstring)."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attr)
