"""Scalar expressions for native emitters: a primitive's ``native_forward`` /
``native_backward`` text with its names bound to array elements.

The texts are plain Python (``dy * y * (1 - y)``, ``1 / (1 + exp(-x))``,
``x if x > 0 else 0``). An emitter binds each name to an element expression,
gives every number the kernel's dtype (a float32 kernel must not compute in
float64 because of a literal ``1``) and names the functions as its target
does (``math.exp`` in numba; the CUDA emitter translates the numba kernels).
"""
from __future__ import annotations

import ast
import functools

@functools.lru_cache(maxsize=None)
def _parse(text):
    return ast.parse(text, mode="eval")


def names_read(text) -> set:
    """The names an expression reads (``{"dy", "y"}``), not the functions it calls."""
    return {n.id for n in ast.walk(_parse(text)) if isinstance(n, ast.Name)} - calls(text)


def calls(text) -> set:
    """The functions an expression calls (``{"exp"}``)."""
    return {n.func.id for n in ast.walk(_parse(text)) if isinstance(n, ast.Call)}


def numbers(text) -> set:
    return {n.value for n in ast.walk(_parse(text)) if isinstance(n, ast.Constant)}


def const_name(value) -> str:
    """The name a kernel module gives the typed constant ``value`` (``K0_5``, ``Km1``)."""
    s = repr(float(value)).replace("-", "m").replace(".", "_").replace("+", "p")
    return "K" + s.replace("_0", "") if s.endswith("_0") else "K" + s


class _Bind(ast.NodeTransformer):
    def __init__(self, env, functions, const):
        self.env, self.functions, self.const = env, functions, const

    def visit_Name(self, node):
        if node.id not in self.env:
            raise KeyError(f"no binding for {node.id!r}")
        return ast.copy_location(ast.Name(id=f"({self.env[node.id]})", ctx=ast.Load()), node)

    def visit_Constant(self, node):
        return ast.copy_location(ast.Name(id=self.const(node.value), ctx=ast.Load()), node)

    def visit_Call(self, node):
        node.args = [self.visit(a) for a in node.args]
        name = node.func.id
        if name not in self.functions:
            raise KeyError(f"no native function for {name!r}")
        node.func = ast.Name(id=self.functions[name], ctx=ast.Load())
        return node


def python_expr(text, env, functions, const=const_name) -> str:
    """``text`` with names bound by ``env`` as Python (numba) source, in
    parentheses: emitters join these into sums, and ``a + x if c else 0``
    would put the whole sum under relu's condition."""
    tree = _Bind(env, functions, const).visit(ast.parse(text, mode="eval"))
    return f"({ast.unparse(tree)})"
