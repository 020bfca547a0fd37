"""eidsl: a language and compiler for cortical excitatory-inhibitory spiking networks (DeepEISNN).

The flow, one stage a subpackage: text -> `eidsl.lang` (parse, elaborate, check) -> `eidsl.ir`
(the graph) -> `eidsl_compiler` (plan, PyTorch module, E-I Init) -> `eidsl.train`. `eidsl.data`,
`eidsl.interop`, `eidsl.tools` and `eidsl.cli` sit around it.
"""
from eidsl.api import build, build_graph, compile_network, ei_init, load_graph, optimizer, unwrap
from eidsl.errors import EidslError, SpecError
from eidsl.interop.dann import import_dann
from eidsl.interop.deepeisnn import import_deepeisnn

__all__ = ["build", "build_graph", "compile_network", "ei_init", "import_dann", "import_deepeisnn", "load_graph",
           "optimizer", "unwrap", "EidslError", "SpecError"]
__version__ = "0.1.0"
