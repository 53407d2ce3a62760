"""Structural pruning (importance criteria, allocation policy, surgery, compensation).

``edgeprune.prune`` is also the Python API's entry point: this package is callable, and
calling it runs ``edgeprune.api.prune`` (``edgeprune.prune(model, data, ...)``). A module
attribute could not be the function, because importing ``edgeprune.prune.policy`` binds
this package as ``edgeprune.prune``.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from edgeprune.api import prune

        return prune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
