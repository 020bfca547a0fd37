"""eidsl: a language and compiler for cortical excitatory-inhibitory spiking networks (DeepEISNN)."""
from .errors import EidslError, SpecError

__all__ = ["build", "build_graph", "ei_init", "import_dann", "import_deepeisnn", "load_graph", "optimizer", "unwrap",
           "EidslError", "SpecError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The API is loaded on first use: it imports the compiler, whose modules import eidsl's IR,
    # so loading it here eagerly would make `import compiler.<module>` circular.
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'eidsl' has no attribute {name!r}")
