"""Cost of anomaly mode (gr.detect_anomaly): gr.unroll + backward of built-in cells, off vs on,
interleaved in one process. Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/anomaly_cost.py"""
import time, numpy as np, graphrnn as gr
from threadpoolctl import threadpool_info
print([ (p["internal_api"], p.get("architecture")) for p in threadpool_info()])
for cname, (n, t, d, h) in [("gru", (32, 35, 32, 64)), ("lstm", (20, 35, 100, 100)), ("gru", (1, 8, 2, 16))]:
    cell = gr.cells.CELLS[cname](d, h); params = cell.init_params(seed=0)
    xs = np.random.default_rng(0).normal(size=(n, t, d)); dhs = np.ones((n, t, h))
    def once():
        r = gr.unroll(cell, params, xs, engine="numpy"); r.backward(dhs)
    for _ in range(5): once()
    off, on = [], []
    for rnd in range(30):
        t0 = time.perf_counter(); once(); off.append(time.perf_counter() - t0)
        with gr.detect_anomaly():
            t0 = time.perf_counter(); once(); on.append(time.perf_counter() - t0)
    mo, mn = np.median(off), np.median(on)
    print(f"{cname} N={n} T={t} D={d} H={h}: off {mo*1e3:.3f} ms, on {mn*1e3:.3f} ms, ratio {mn/mo:.3f}")
