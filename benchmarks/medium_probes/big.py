"""The after-loop products over all 700 rows (dWx, dxs) against the 1024^3 SGEMM rate (benchmarks/results/medium.md)."""
import time, numpy as np
rng=np.random.default_rng(0)
M,D,G=700,650,2600
dy=rng.standard_normal((M,G)).astype(np.float32); W=rng.standard_normal((D,G)).astype(np.float32)
X=rng.standard_normal((M,D)).astype(np.float32)
dx=np.empty((M,D),np.float32); dxT=np.empty((D,M),np.float32); dW=np.empty((D,G),np.float32)
A=rng.standard_normal((1024,1024)).astype(np.float32); C=np.empty_like(A)
cases={"peak": (lambda: np.matmul(A,A,out=C), 2*1024**3),
 "dx=dy@W.T out": (lambda: np.matmul(dy,W.T,out=dx), 2*M*D*G),
 "dx=(W@dy.T).T": (lambda: np.matmul(W,dy.T,out=dxT), 2*M*D*G),
 "dW=X.T@dy out": (lambda: np.matmul(X.T,dy,out=dW), 2*M*D*G),
 "fwd X@W": (lambda: np.matmul(X,W), 2*M*D*G)}
for f,_ in cases.values(): f()
s={k:[] for k in cases}
for r in range(9):
    for k,(f,fl) in cases.items():
        t0=time.perf_counter(); f(); s[k].append(time.perf_counter()-t0)
pk=2*1024**3/min(s["peak"])/1e9
for k,(f,fl) in cases.items(): print(f"{k:16s} min {min(s[k])*1e3:6.1f} med {np.median(s[k])*1e3:6.1f} ms  {fl/min(s[k])/1e9:6.1f} GFLOP/s {100*fl/min(s[k])/1e9/pk:4.0f}%")
