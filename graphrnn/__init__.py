"""graphrnn: recurrent cells declared as graphs of primitives, with hand-written
local backwards, compiled for BPTT, checked numerically and drawn with graphviz."""
from . import cells, emit
from .backend import BackendError, get_backend, set_backend
from .graph import Cell, CellBuilder, Value, concat, exp, matmul, relu, sigmoid, tanh
from .plan import Plan, compile_cell
from .primitives import PRIMITIVES, GraphError
from .render import render
from .unroll import Grads, Recurrent, Run, unroll, unroll_naive

__version__ = "0.1.0"

__all__ = [
    "BackendError", "Cell", "CellBuilder", "GraphError", "Grads", "PRIMITIVES", "Plan",
    "Recurrent", "Run", "Value", "cells", "compile_cell", "concat", "emit", "exp", "get_backend",
    "matmul", "relu", "render", "set_backend", "sigmoid", "tanh", "unroll", "unroll_naive",
]
