"""edgeprune: prune, quantize, compile and prove a vision model on an edge target.

From Python: ``edgeprune.compile(model, data, target=..., **options)`` returns a
``Report``; ``edgeprune.prune(model, data, **options)`` a ``PruneResult`` (see
``edgeprune.api``). They are imported on first use, so ``import edgeprune`` stays cheap.
"""

__version__ = "0.1.0"

__all__ = ["EdgepruneError", "InputError", "PruneResult", "Report", "UnknownOptionError",
           "__version__", "compile", "prune"]

_API = ("compile", "Report", "PruneResult", "Metrics", "StageInfo", "Artifacts",
        "LiveArchitecture")


def __getattr__(name: str):
    if name == "prune":
        # edgeprune.prune is also the subpackage of pruning methods: importing it (also
        # indirectly, as edgeprune.prune.policy) binds it here, so that module is made
        # callable (edgeprune/prune/__init__.py) and is what edgeprune.prune always is
        import importlib

        return importlib.import_module("edgeprune.prune")
    if name in _API:
        from edgeprune import api

        return getattr(api, name)
    if name in ("EdgepruneError", "InputError", "UnknownOptionError"):
        from edgeprune import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")
