"""Compile kernels of a generated native module into numba's disk cache.

Run as a script (``python _build_kernels.py MODULE.py LOCK KERNEL...``), not as part
of the package: a build process imports numba and the module, nothing else,
and leaves its results in the cache for the process that started it.
"""
import importlib.util
import os
import sys


def _idle_priority():
    """Run only on CPU time nobody else wants: the build must not slow the run
    that started it, nor anything else on the machine."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except (AttributeError, OSError):
            pass


def main(path, lock, kernels):
    _idle_priority()
    try:
        compile_kernels(path, kernels)
    finally:
        try:
            os.unlink(lock)
        except OSError:
            pass


def compile_kernels(path, kernels):
    import numba
    name = "graphrnn_native_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # numba's cache records the module by this name
    spec.loader.exec_module(mod)
    for k in kernels:
        sig = tuple(eval(t, {}, vars(numba)) for t in mod.SIGNATURES[k])
        getattr(mod, k).compile(sig)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
