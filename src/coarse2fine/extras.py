"""Optional dependencies (pip extras): imported where they are needed, with an error that says
which extra to install when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the pip extra that brings it."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` saying that ``what`` needs ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(f"{what} needs the {module} package: pip install 'coarse2fine[{extra}]' ({err})") from None
