#!/usr/bin/python3
"""PyTorch peer of bench_conv.c: one 3x3 convolution (stride 1, padding 1, no bias),
milliseconds for the forward pass, the input gradient and the weight gradient.
   bench_conv.py N C H OC [iters=4] [threads=1]"""
import sys
import time

import torch
import torch.nn.functional as F

n, c, h, oc = (int(a) for a in sys.argv[1:5])
iters = int(sys.argv[5]) if len(sys.argv) > 5 else 4
torch.set_num_threads(int(sys.argv[6]) if len(sys.argv) > 6 else 1)
torch.manual_seed(1)
x = torch.randn(n, c, h, h)
w = torch.randn(oc, c, 3, 3) * 0.05
best = [1e30, 1e30, 1e30]
for it in range(iters + 1):
    t0 = time.time()
    with torch.no_grad():
        y = F.conv2d(x, w, padding=1)
    t1 = time.time()
    xg = x.clone().requires_grad_(True)
    out = F.conv2d(xg, w, padding=1)
    t2 = time.time()
    (dx,) = torch.autograd.grad(out, xg, y)
    t3 = time.time()
    wg = w.clone().requires_grad_(True)
    out = F.conv2d(x, wg, padding=1)
    t4 = time.time()
    (dw,) = torch.autograd.grad(out, wg, y)
    t5 = time.time()
    if it > 0:  # the autograd passes only, not the forward they need
        best = [min(best[0], t1 - t0), min(best[1], t3 - t2), min(best[2], t5 - t4)]
print("pytorch  n %d c %d %dx%d oc %d threads %d: forward %.1f ms, dx %.1f ms, dw %.1f ms"
      % (n, c, h, h, oc, torch.get_num_threads(), best[0] * 1e3, best[1] * 1e3, best[2] * 1e3))
