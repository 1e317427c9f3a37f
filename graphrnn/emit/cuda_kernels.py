"""The CUDA emitter: the staged loops on CuPy, one kernel launch per fused
elementwise region per step, cuBLAS (``cupy.matmul``) for the matmuls.

It takes the staged schedule the numba emitter made from the plan (the same
regions, buffers and gradient flow) and writes each region's per-row body as
a CUDA C kernel (``cupy.RawKernel``): one thread block per batch row, its
threads striding over the columns of each op, ``__syncthreads()`` between ops
(an op may read columns another thread wrote: slices, concatenations, a
broadcast column). The drivers are the staged numba drivers with ``xp`` for
numpy and ``_launch`` for the kernel calls.

Untested on a GPU: no GPU was available while this was written. The tests
compile every kernel with ``nvcc`` where it is installed, and run the
generated kernels on the CPU (each compiled by a C compiler with one thread
per block, the blocks in turn) against the numpy loops.
"""
from __future__ import annotations

import ast
import textwrap

import numpy as np

from . import numba_loops

THREADS = 256
_C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_MATH = ("exp", "tanh", "sqrt", "log", "sin", "cos", "floor", "pow")  # numba_loops.FUNCTIONS' targets
_FUNCTIONS = {np.dtype(np.float32): {f"math.{f}": f"{f}f" for f in _MATH},
              np.dtype(np.float64): {f"math.{f}": f for f in _MATH}}
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Gt: ">", ast.Lt: "<",
        ast.GtE: ">=", ast.LtE: "<="}


class _Translator:
    """A staged kernel's Python body (numba_loops' restricted form) as CUDA C."""

    def __init__(self, module, dtype):
        self.module, self.layout = module, module.layout
        self.ctype = _C_TYPES[np.dtype(dtype)]
        self.functions = _FUNCTIONS[np.dtype(dtype)]
        self.consts = {numba_loops.scalar.const_name(v): v for v in module.layout.consts}
        self.locals = set()

    def kernel(self, k):
        params = ", ".join(["const int t", "const int N"] + [f"{self.ctype}* __restrict__ {a}" for a in k.params])
        tree = ast.parse(textwrap.dedent("\n".join(k.text())))
        (rows,) = tree.body  # for r in range(N): ...
        self.locals = set()
        body = [f'extern "C" __global__ void {k.name}({params}) {{',
                "    const int r = blockIdx.x;",
                "    if (r >= N) return;"]
        body += self.block(rows.body, 1, parallel=True)
        body.append("}")
        return "\n".join(body)

    def block(self, stmts, depth, parallel):
        out = []
        pad = "    " * depth
        for st in stmts:
            if isinstance(st, ast.Pass):
                continue
            if isinstance(st, ast.For):
                var, stop = st.target.id, self.expr(st.iter.args[0])
                if parallel and var == "j":
                    # the columns of one op, over the block's threads; then every
                    # thread waits, since the next op may read any column
                    out.append(f"{pad}for (int j = threadIdx.x; j < {stop}; j += blockDim.x) {{")
                    out += self.block(st.body, depth + 1, parallel=False)
                    out.append(f"{pad}}}")
                    out.append(f"{pad}__syncthreads();")
                else:  # a broadcast operand's sum: every thread makes it whole
                    out.append(f"{pad}for (int {var} = 0; {var} < {stop}; ++{var}) {{")
                    out += self.block(st.body, depth + 1, parallel=False)
                    out.append(f"{pad}}}")
                continue
            if isinstance(st, ast.Assign):
                (target,) = st.targets
                lhs = self.expr(target)
                if isinstance(target, ast.Name) and target.id not in self.locals:
                    self.locals.add(target.id)
                    lhs = f"{self.ctype} {lhs}"
                out.append(f"{pad}{lhs} = {self.expr(st.value)};")
                continue
            if isinstance(st, ast.AugAssign):
                out.append(f"{pad}{self.expr(st.target)} {_OPS[type(st.op)]}= {self.expr(st.value)};")
                continue
            raise ValueError(f"not in the staged kernels' form: {ast.unparse(st)}")
        return out

    def expr(self, n):
        if isinstance(n, ast.Constant):
            return repr(n.value)
        if isinstance(n, ast.Name):
            if n.id in self.consts:
                return f"(({self.ctype}){self.consts[n.id]!r})"
            return n.id
        if isinstance(n, ast.Subscript):
            return self.element(n.value.id, n.slice)
        if isinstance(n, ast.BinOp):
            return f"({self.expr(n.left)} {_OPS[type(n.op)]} {self.expr(n.right)})"
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return f"(-{self.expr(n.operand)})"
        if isinstance(n, ast.Compare):
            return f"({self.expr(n.left)} {_OPS[type(n.ops[0])]} {self.expr(n.comparators[0])})"
        if isinstance(n, ast.IfExp):
            return f"({self.expr(n.test)} ? {self.expr(n.body)} : {self.expr(n.orelse)})"
        if isinstance(n, ast.Call):
            return f"{self.functions[ast.unparse(n.func)]}({', '.join(self.expr(a) for a in n.args)})"
        raise ValueError(f"not in the staged kernels' form: {ast.unparse(n)}")

    def element(self, array, index):
        """A[t, r, c] and the like as a flat index into a C-contiguous array."""
        idx = [self.expr(i) for i in (index.elts if isinstance(index, ast.Tuple) else [index])]
        width = self.layout.arrays[array][1]
        if len(idx) == 3:
            t, r, c = idx
            return f"{array}[(({t}) * N + ({r})) * {width} + ({c})]"
        if len(idx) == 2:
            return f"{array}[({idx[0]}) * {width} + ({idx[1]})]"
        return f"{array}[{idx[0]}]"


def module_text(plan, dtype):
    """``(cuda_source, python_source)``: every staged kernel of ``plan`` as
    CUDA C, and the drivers that launch them (``forward_staged``,
    ``backward_staged_XY``) as Python over ``xp``."""
    module = numba_loops.ModuleText(plan, dtype)
    if module.python:
        n = module.python[0]
        raise numba_loops.NotNative(f"primitive {plan.info[n][0].name!r} (node {plan.graph.nodes[n]['label']!r}) "
                                    "has no native form, and the CUDA kernels do not call Python rules")
    tr = _Translator(module, dtype)
    kernels = [k for k in module.kernels if k.per_step]
    cuda = "\n\n".join(tr.kernel(k) for k in kernels) + "\n"
    names = [n for n in module.schedules if "staged" in n]
    py = ['"""Generated by graphrnn.emit.cuda_kernels; launches the kernels of CUDA_SOURCE."""',
          f"DT = {np.dtype(dtype).name!r}", "",
          "def _c(a):", "    return xp.ascontiguousarray(a, dtype=DT)", ""]
    for name in names:
        py += [""] + module.driver_lines(name, "cuda")
    py.append("")
    py.append(f"KERNELS = {[k.name for k in kernels]!r}")
    return cuda, "\n".join(py) + "\n"


def load(plan, dtype, xp, launch):
    """The drivers as functions, with ``xp`` the array module and ``launch(name,
    t, N, *arrays)`` running a kernel (one block per row)."""
    _, py = module_text(plan, dtype)
    namespace = {"xp": xp, "_launch": launch}
    exec(compile(py, f"<graphrnn cuda drivers {plan.cell.name}>", "exec"), namespace)
    return namespace


def cupy_launcher(plan, dtype):
    """``launch`` for ``load`` on CuPy: the kernels compiled with ``cupy.RawModule``."""
    import cupy
    cuda, _ = module_text(plan, dtype)
    module = cupy.RawModule(code=cuda, options=("--std=c++11",))
    kernels = {}

    def launch(name, t, n, *arrays):
        k = kernels.get(name)
        if k is None:
            k = kernels[name] = module.get_function(name)
        k((n,), (THREADS,), (np.int32(t), np.int32(n), *arrays))
    return launch


class CudaLoops:
    """The loops seam on CuPy: staged drivers launching the generated kernels."""
    name = "cuda"

    def __init__(self, plan, dtype):
        import cupy
        self.ns = load(plan, dtype, cupy, cupy_launcher(plan, dtype))

    def forward(self, env):
        self.ns["forward_staged"](env.T, env.N, env.arrays)
        return self.name

    def backward(self, env, need_xs, has_dhs):
        return self.ns[f"backward_staged_{int(need_xs)}{int(has_dhs)}"](env.T, env.N, env.arrays)
