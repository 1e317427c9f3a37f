"""graphrnn: recurrent cells declared as graphs of primitives, with hand-written
local backwards, compiled for BPTT, checked numerically and drawn with graphviz.

The public names below load their modules on first use. ``graphrnn`` the
command imports this package before it can catch anything; loading numpy,
networkx and graphviz here would leave a Ctrl-C in the first fraction of a
second to end in a traceback, and would make ``graphrnn --help`` wait for them.
"""
import importlib
import sys
import types

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "AnomalyError": "errors", "BackendError": "errors", "GraphError": "errors",
    "detect_anomaly": "anomaly",
    "get_backend": "backend", "set_backend": "backend",
    "Cell": "graph", "CellBuilder": "graph", "Value": "graph", "concat": "graph", "exp": "graph",
    "matmul": "graph", "relu": "graph", "sigmoid": "graph", "tanh": "graph",
    "sqrt": "graph", "log": "graph", "abs": "graph", "sin": "graph", "cos": "graph", "floor": "graph",
    "maximum": "graph", "minimum": "graph", "clip": "graph", "where": "graph",
    "register_primitive": "graph", "Primitive": "primitives", "Elementwise": "primitives",
    "Plan": "plan", "compile_cell": "plan",
    "Columns": "step", "Linear": "step", "Step": "step", "compile_step": "step",
    "PRIMITIVES": "primitives",
    "render": "render",
    "explain": "explain",
    "Grads": "unroll", "Recurrent": "unroll", "Run": "unroll", "unroll": "unroll", "unroll_naive": "unroll",
}
# every public submodule, as gr.NAME (loaded on first use like the names above);
# render and unroll are the functions of those names, their modules graphrnn.render, graphrnn.unroll
_SUBMODULES = ("anomaly", "backend", "bench", "cells", "checkpoint", "contenders", "data", "demo", "emit",
               "errors", "export", "files", "gradflow", "graph", "layers", "models", "optim", "plan",
               "plots", "primitives", "report", "runfolder", "schema", "step", "sweep", "tasks", "tbptt",
               "testing", "train", "workspace")
# Functions named like the module that defines them: importing the module
# graphrnn.render binds it to the package as `render`; the public name is the function.
_SHADOWED = ("render", "unroll", "explain")

__all__ = sorted([*_PUBLIC, *_SUBMODULES])


class _Package(types.ModuleType):
    def __getattr__(self, name):
        if name in _SUBMODULES:
            return importlib.import_module(f"{__name__}.{name}")
        where = _PUBLIC.get(name)
        if where is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
        setattr(self, name, value)
        return value

    def __setattr__(self, name, value):
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(__all__))


sys.modules[__name__].__class__ = _Package
