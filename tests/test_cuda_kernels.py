"""The CUDA emitter without a GPU: every generated kernel compiles with nvcc
(where installed), and the kernels, compiled for the CPU by a C++ compiler
(one thread per block, the blocks in turn), driven by the generated CuPy
drivers over numpy, compute what the numpy loops compute. What this cannot
show: behaviour with many threads per block on a real GPU, and speed."""
import ctypes
import hashlib
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphrnn as gr
from graphrnn.emit import cuda_kernels
from graphrnn.emit.native_layout import stages
from graphrnn.testing import check_engines, random_cells, random_inputs, scaled_examples, unroll_args
from graphrnn.unroll import Run, _prepare

CELLS = ("rnn", "gru", "lstm", "lstm_nico", "mgu")
NVCC = shutil.which("nvcc")
CXX = shutil.which("g++") or shutil.which("c++")

# CUDA's names for the CPU: one thread per block, blocks run one after another.
SHIM = """
#include <math.h>
struct dim3_ { int x; };
static dim3_ threadIdx = {0}, blockDim = {1}, blockIdx = {0};
#define __global__
#define __syncthreads() ((void)0)
extern "C" void graphrnn_set_block(int b) { blockIdx.x = b; }
"""


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("name", CELLS)
def test_kernels_are_cuda_c_with_one_launch_per_region(name, dtype):
    plan = gr.compile_cell(gr.cells.get(name)(3, 4))
    cuda, py = cuda_kernels.module_text(plan, dtype)
    for leftover in ("math.", "range(", " K0", "np.", "[t, r"):
        assert leftover not in cuda
    assert cuda.count("{") == cuda.count("}")
    kernels = [ln for ln in cuda.splitlines() if ln.startswith('extern "C" __global__ void ')]
    regions = [s for s in stages(plan) if s[0] == "region"]
    forward = [k for k in kernels if "forward_staged_" in k]
    assert 1 <= len(forward) <= len(regions) + 1  # at most one launch per region per step (+ state copies)
    ctype = "float" if dtype == np.float32 else "double"
    assert all(f"{ctype}* __restrict__" in k or k.count(",") == 1 for k in kernels)
    assert ("expf(" in cuda or "tanhf(" in cuda) == (dtype == np.float32)
    assert "_launch(" in py and "xp.matmul(" in py


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("name", CELLS)
def test_every_kernel_compiles_with_nvcc(name, tmp_path):
    for dtype in (np.float32, np.float64):
        cuda, _ = cuda_kernels.module_text(gr.compile_cell(gr.cells.get(name)(5, 7)), dtype)
        src = tmp_path / f"{name}.cu"
        src.write_text(cuda)
        out = subprocess.run([NVCC, "-ptx", "-o", str(tmp_path / f"{name}.ptx"), str(src)],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


_LIBS = {}


def _cpu_launcher(plan, dtype, folder):
    """``launch`` running the generated kernels compiled for the CPU."""
    cuda, _ = cuda_kernels.module_text(plan, dtype)
    key = hashlib.sha256(cuda.encode()).hexdigest()[:16]
    lib = _LIBS.get(key)
    if lib is None:
        src, so = folder / f"{key}.cpp", folder / f"{key}.so"
        src.write_text(SHIM + cuda)
        out = subprocess.run([CXX, "-O1", "-shared", "-fPIC", "-o", str(so), str(src)],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        lib = _LIBS[key] = ctypes.CDLL(str(so))

    def launch(name, t, n, *arrays):
        fn = getattr(lib, name)
        for a in arrays:
            assert a.flags.c_contiguous and a.dtype == dtype
        ptrs = [ctypes.c_void_p(a.ctypes.data) for a in arrays]
        for b in range(n):
            lib.graphrnn_set_block(b)
            fn(ctypes.c_int(t), ctypes.c_int(n), *ptrs)
    return launch


class _Loops:
    name = "cuda-on-cpu"

    def __init__(self, ns):
        self.ns = ns

    def forward(self, env):
        self.ns["forward_staged"](env.T, env.N, env.arrays)
        return self.name

    def backward(self, env, need_xs, has_dhs):
        return self.ns[f"backward_staged_{int(need_xs)}{int(has_dhs)}"](env.T, env.N, env.arrays)


def _cuda_run(cell, params, xs, state0, folder):
    xp, dtype, xs, s0, n, t = _prepare(cell, params, xs, state0)
    plan = gr.compile_cell(cell)
    ns = cuda_kernels.load(plan, dtype, np, _cpu_launcher(plan, dtype, folder))
    return Run(plan, xp, params, xs, s0, n, t, dtype, _Loops(ns))


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda-on-cpu")


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
@pytest.mark.parametrize("name", CELLS)
def test_generated_kernels_and_drivers_compute_what_the_numpy_loops_compute(name, build_dir):
    cell = gr.cells.get(name)(3, 4)
    params, xs, s0 = random_inputs(cell, np.random.default_rng(11), batch=3, steps=5)
    for dhs, dstate in ((None, None), (None, False), (False, None)):
        a = gr.unroll(cell, params, xs, s0, engine="numpy")
        b = _cuda_run(cell, params, xs, s0, build_dir)
        assert check_engines(cell, params, xs, s0, dhs=dhs, dstate=dstate, runs=(a, b)).ok


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
@settings(max_examples=scaled_examples(10), deadline=None)
@given(data=st.data(), cell=random_cells(max_ops=6))
def test_random_cells_on_the_cuda_kernels_agree_with_numpy(data, cell, build_dir):
    params, xs, state0 = data.draw(unroll_args(cell, max_steps=4), label="unroll args")
    a = gr.unroll(cell, params, xs, state0, engine="numpy")
    b = _cuda_run(cell, params, xs, state0, build_dir)
    assert check_engines(cell, params, xs, state0, runs=(a, b)).ok
