"""The per-step LSTM product (20x650 @ 650x2600) and its transpose, numpy forms against jax.jit; run with OPENBLAS_NUM_THREADS=1 or 2 (benchmarks/results/medium.md)."""
import time, numpy as np, os
import jax, jax.numpy as jnp
jax.config.update("jax_platforms","cpu")
from threadpoolctl import threadpool_info
print([ (i['internal_api'], i.get('architecture'), i['num_threads']) for i in threadpool_info() if i['user_api']=='blas'])
rng=np.random.default_rng(0)
N,H,G=20,650,4
h=rng.standard_normal((N,H)).astype(np.float32)
W=rng.standard_normal((H,G*H)).astype(np.float32)
hT=np.ascontiguousarray(h.T); WT=np.ascontiguousarray(W.T)
out=np.empty((N,G*H),np.float32); outT=np.empty((G*H,N),np.float32)
dy=rng.standard_normal((N,G*H)).astype(np.float32)
dh=np.empty((N,H),np.float32)
A=rng.standard_normal((1024,1024)).astype(np.float32); C=np.empty_like(A)
jf=jax.jit(lambda a,b:a@b); jb=jax.jit(lambda d,w: d@w.T)
jh,jW,jdy=jnp.asarray(h),jnp.asarray(W),jnp.asarray(dy)
cases={
 "peak 1024^3": (lambda: np.matmul(A,A,out=C), 2*1024**3),
 "np h@W out=": (lambda: np.matmul(h,W,out=out), 2*N*H*G*H),
 "np W.T@hT (feature-major)": (lambda: np.matmul(W.T,hT,out=outT), 2*N*H*G*H),
 "np WT@hT (WT contiguous)": (lambda: np.matmul(WT,hT,out=outT), 2*N*H*G*H),
 "jax h@W": (lambda: jf(jh,jW).block_until_ready(), 2*N*H*G*H),
 "np dy@W.T out=": (lambda: np.matmul(dy,W.T,out=dh), 2*N*H*G*H),
 "np (W@dy.T).T": (lambda: np.ascontiguousarray(np.matmul(W,dy.T).T), 2*N*H*G*H),
 "np W@dyT (feature-major bwd)": (lambda: np.matmul(W, np.ascontiguousarray(dy.T)), 2*N*H*G*H),
 "jax dy@W.T": (lambda: jb(jdy,jW).block_until_ready(), 2*N*H*G*H),
}
for f,_ in cases.values(): f(); f()
best={k:1e9 for k in cases}
for r in range(7):
    for k,(f,fl) in cases.items():
        t0=time.perf_counter()
        for _ in range(20): f()
        best[k]=min(best[k],(time.perf_counter()-t0)/20)
peak=2*1024**3/best["peak 1024^3"]/1e9
for k,(f,fl) in cases.items():
    g=fl/best[k]/1e9
    print(f"{k:32s} {best[k]*1e6:9.1f} us {g:7.1f} GFLOP/s {100*g/peak:5.1f}% peak")
