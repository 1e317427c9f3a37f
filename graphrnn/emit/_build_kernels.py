"""Compile kernels of a generated native module into numba's disk cache.

Run as a script (``python _build_kernels.py MODULE.py KERNEL...``), not as part
of the package: a build process imports numba and the module, nothing else,
and leaves its results in the cache for the process that started it.
"""
import importlib.util
import os
import sys


def main(path, kernels):
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
    main(sys.argv[1], sys.argv[2:])
