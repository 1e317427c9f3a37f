"""Forms of the per-step backward product dy @ Wh.T at 20 rows, numpy against jax.jit, interleaved (benchmarks/results/medium.md)."""
import time, numpy as np
import jax, jax.numpy as jnp
rng=np.random.default_rng(0)
N,H,G=20,650,4
W=rng.standard_normal((H,G*H)).astype(np.float32)
WT=np.ascontiguousarray(W.T); WF=np.asfortranarray(W)
dy=rng.standard_normal((N,G*H)).astype(np.float32)
dyT=np.ascontiguousarray(dy.T)
dh=np.empty((N,H),np.float32); dhT=np.empty((H,N),np.float32)
jb=jax.jit(lambda d,w: d@w.T); jdy,jW=jnp.asarray(dy),jnp.asarray(W)
cases={
 "dy@W.T": lambda: np.matmul(dy,W.T,out=dh),
 "(W@dy.T).T copy": lambda: np.ascontiguousarray(np.matmul(W,dy.T).T),
 "W@dy.T out=dhT": lambda: np.matmul(W,dy.T,out=dhT),
 "dy@WT (WT C-contig)": lambda: np.matmul(dy,WT,out=dh),
 "dy@WF.T (W F-order)": lambda: np.matmul(dy,WF.T,out=dh),
 "W@dyT (dyT contig)": lambda: np.matmul(W,dyT,out=dhT),
 "dy.T copy then W@": lambda: np.matmul(W,np.ascontiguousarray(dy.T),out=dhT),
 "jax": lambda: jb(jdy,jW).block_until_ready(),
}
for f in cases.values(): f()
s={k:[] for k in cases}
for r in range(15):
    for k,f in cases.items():
        t0=time.perf_counter()
        for _ in range(10): f()
        s[k].append((time.perf_counter()-t0)/10)
for k in cases: print(f"{k:24s} min {min(s[k])*1e6:7.0f} med {np.median(s[k])*1e6:7.0f} us")
