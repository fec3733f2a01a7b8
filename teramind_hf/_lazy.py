"""Lazy package attributes (PEP 562): `import teramind_hf` and `teramind --help` must not import torch."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_attributes(package: str, attributes: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose public names live in submodules: ``{name: submodule}``."""

    def __getattr__(name: str) -> Any:
        if name not in attributes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(attributes[name], package), name)

    def __dir__() -> list[str]:
        return sorted(attributes)

    return __getattr__, __dir__
