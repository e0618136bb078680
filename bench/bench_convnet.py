#!/usr/bin/python3
"""PyTorch peer of bench_convnet.c: classifier training steps and inference, images/s.
   bench_convnet.py [batch=256] [steps=5] [threads=2] [arch=convnet3|resnetap10|resnet18]"""
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "gen"))
from classifier_ref import ConvNet, ResNet18, ResNetAP10  # noqa: E402

bs = int(sys.argv[1]) if len(sys.argv) > 1 else 256
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
arch = sys.argv[4] if len(sys.argv) > 4 else "convnet3"
torch.manual_seed(1)
# the architectures and norms dap eval uses for a 1x28x28 input
net = {"convnet3": lambda: ConvNet(1, 10, 128, 3, "instance", 28),
       "resnetap10": lambda: ResNetAP10(1, 10, 64, "instance"),
       "resnet18": lambda: ResNet18(1, 10, 64, "batch", False)}[arch]()
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
x, y = torch.randn(bs, 1, 28, 28), torch.arange(bs) % 10
best_train = best_inf = 1e30
for it in range(steps + 1):
    t0 = time.time()
    net.train()
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    t1 = time.time()
    net.eval()
    with torch.no_grad():
        net(x)
    t2 = time.time()
    if it > 0:
        best_train, best_inf = min(best_train, t1 - t0), min(best_inf, t2 - t1)
print("pytorch %s batch %d threads %d: train %.1f img/s, inference %.1f img/s"
      % (arch, bs, torch.get_num_threads(), bs / best_train, bs / best_inf))
