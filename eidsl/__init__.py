"""eidsl: a language and compiler for cortical excitatory-inhibitory spiking networks (DeepEISNN)."""
from .api import build, build_graph, ei_init, import_deepeisnn, load_graph, optimizer, unwrap
from .errors import EidslError, SpecError

__all__ = ["build", "build_graph", "ei_init", "import_deepeisnn", "load_graph", "optimizer", "unwrap",
           "EidslError", "SpecError"]
__version__ = "0.1.0"
