"""Times each after-loop MatMul.backward_into call of a medium-size run with its operand shapes and strides (benchmarks/results/medium.md)."""
import sys, time, numpy as np
import graphrnn as gr
from graphrnn import primitives as P
name=sys.argv[1]
N,T,D,H=20,35,650,650
cell=gr.cells.get(name)(D,H)
params=cell.init_params(seed=0,dtype=np.float32)
rng=np.random.default_rng(0)
xs=rng.uniform(-1,1,(N,T,D)).astype(np.float32); dhs=rng.uniform(-1,1,(N,T,H)).astype(np.float32)
orig=P.MatMul.backward_into
log=[]
def bi(self,xp,dy,xs_,y,needs,out):
    a,w=xs_
    t0=time.perf_counter(); r=orig(self,xp,dy,xs_,y,needs,out); dt=time.perf_counter()-t0
    desc=(a.shape if a is not None else None, a.strides if a is not None else None, (w.shape, w.strides) if w is not None else None, dy.shape, dy.strides, needs, [ (o.shape,o.strides) if o is not None else None for o in out])
    log.append((dt,desc)); return r
P.MatMul.backward_into=bi
f=lambda: gr.unroll(cell,params,xs).backward(dhs,need_xs=True)
for _ in range(3): f()
for dt,d in log[-6:]: print(f"{dt*1e3:7.1f} ms", d)
