"""cProfile of one medium-size unroll + backward of a cell: python prof.py ln_lstm (benchmarks/results/medium.md)."""
import sys, cProfile, pstats, io, time, numpy as np
import graphrnn as gr
name=sys.argv[1]
N,T,D,H=20,35,650,650
cell=gr.cells.get(name)(D,H)
params=cell.init_params(seed=0,dtype=np.float32)
rng=np.random.default_rng(0)
xs=rng.uniform(-1,1,(N,T,D)).astype(np.float32); dhs=rng.uniform(-1,1,(N,T,H)).astype(np.float32)
f=lambda: gr.unroll(cell,params,xs).backward(dhs,need_xs=True)
f(); f()
pr=cProfile.Profile(); pr.enable()
for _ in range(3): f()
pr.disable()
s=io.StringIO(); st=pstats.Stats(pr,stream=s); st.sort_stats("tottime").print_stats(25); print(s.getvalue()[:6000])
