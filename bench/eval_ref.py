#!/usr/bin/python3
"""PyTorch reference of `dap eval` (hard-label protocol, ConvNet-3) on an image folder
written by `dap subset` (or any distilled folder), so the two means can be compared.

Recipe (SPEC 5, the distillation benchmarks' evaluate_synset): inputs normalised with
Fashion-MNIST's mean/std (0.2861/0.3530); ConvNet-3 (128 ch, instance norm, first conv
padded by 3); SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256 reshuffled each
epoch, cross-entropy; at epoch E//2 the rate drops x0.1 and the optimizer is re-created;
optional DSA (--aug dsa: one transform per batch, per-image parameters); the test set is
Fashion-MNIST's t10k, evaluated in eval mode.

  /usr/bin/python3 bench/eval_ref.py --train DIR --runs 3 --epochs 300 [--aug dsa] [--threads 2]
  python3 bench/eval_ref.py --train DIR --device cuda      # the GPU peer of dap eval --device cuda
On cuda, FP32 throughout by default (TF32 off for matmuls and cuDNN convolutions, as dap's
cuBLAS calls); --precision tf32 turns it on for the convolutions only (PyTorch's own
default; dap has no TF32 mode). --arch resnetap10|resnet18 (instance / batch
norm, width 64: dap's defaults for those names) times the cross-architecture evaluators.
A run's seconds cover its training (the epochs, the device synchronised at the end), as
dap eval's; the test pass is not timed. The loss and accuracy of an epoch stay on the
device unless printed (no host round trip per batch).
"""
import argparse
import gzip
import json
import math
import os
import re
import sys
import time

for extra in ("/opt/dapvenv/lib/python3.11/site-packages", "/usr/lib/python3/dist-packages"):
    if os.path.isdir(extra) and extra not in sys.path:
        sys.path.append(extra)  # appended: the interpreter's own numpy / torch stay first

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "gen"))
from classifier_ref import ConvNet, ResNet18, ResNetAP10  # noqa: E402

FMNIST = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
          "Ankle boot"]
MEAN, STD = 0.2861, 0.3530


def canon(s):
    return re.sub(r"[^0-9a-z]", "", s.lower())


def load_folder(d):
    xs, ys = [], []
    for name in sorted(os.listdir(d)):
        sub = os.path.join(d, name)
        if not os.path.isdir(sub) or name.startswith("."):
            continue
        k = [canon(c) for c in FMNIST].index(canon(name))
        for f in sorted(os.listdir(sub)):
            if f.lower().endswith((".png", ".jpg", ".jpeg")):
                xs.append(np.asarray(Image.open(os.path.join(sub, f)).convert("L").resize((28, 28)), dtype=np.float32))
                ys.append(k)
    return np.stack(xs), np.array(ys, dtype=np.int64)


def load_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    nd = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


def normalise(x_u8):
    return torch.from_numpy(((x_u8 / 255.0 - MEAN) / STD).astype(np.float32)).unsqueeze(1)


# ---- DSA (one transform per batch, per-image parameters, on normalised tensors) ----
def dsa(x, g):
    return dsa_op(x, g, int(torch.randint(0, 6, (1,), generator=g)))


def dsa_op(x, g, op):
    n = x.shape[0]
    r = lambda *s: torch.rand(*s, generator=g).to(x.device)  # drawn on the CPU: the same stream on any device
    if op == 0:  # colour
        x = x + (r(n, 1, 1, 1) - 0.5)
        m = x.mean(dim=1, keepdim=True)
        x = (x - m) * (r(n, 1, 1, 1) * 2.0) + m
        m = x.mean(dim=[1, 2, 3], keepdim=True)
        return (x - m) * (r(n, 1, 1, 1) + 0.5) + m
    if op == 1:  # crop: shift by up to 1/8, zero fill
        h, w = x.shape[2:]
        sh, sw = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
        ty = torch.randint(-sh, sh + 1, (n,), generator=g)
        tx = torch.randint(-sw, sw + 1, (n,), generator=g)
        xp = F.pad(x, [sw, sw, sh, sh])
        return torch.stack([xp[i, :, sh + ty[i]:sh + ty[i] + h, sw + tx[i]:sw + tx[i] + w] for i in range(n)])
    if op == 2:  # cutout: half-size square
        h, w = x.shape[2:]
        ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
        oy = torch.randint(0, h + (1 - ch % 2), (n,), generator=g)
        ox = torch.randint(0, w + (1 - cw % 2), (n,), generator=g)
        x = x.clone()
        for i in range(n):
            y0, x0 = max(int(oy[i]) - ch // 2, 0), max(int(ox[i]) - cw // 2, 0)
            x[i, :, y0:int(oy[i]) - ch // 2 + ch, x0:int(ox[i]) - cw // 2 + cw] = 0
        return x
    if op == 3:  # flip
        return torch.where(r(n, 1, 1, 1) < 0.5, x.flip(3), x)
    if op == 4:  # scale
        sx, sy = [r(n) * (1.2 - 1 / 1.2) + 1 / 1.2 for _ in range(2)]
        z = torch.zeros(n, device=x.device)
        theta = torch.stack([torch.stack([sx, z, z], 1), torch.stack([z, sy, z], 1)], 1)
    else:  # rotate
        a = (r(n) - 0.5) * 2 * 15 / 180 * math.pi
        z = torch.zeros(n, device=x.device)
        theta = torch.stack([torch.stack([a.cos(), -a.sin(), z], 1), torch.stack([a.sin(), a.cos(), z], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def make_net(arch):
    if arch == "resnetap10":
        return ResNetAP10(1, 10, 64, "instance")
    if arch == "resnet18":
        return ResNet18(1, 10, 64, "batch", False)
    return ConvNet(1, 10, 128, 3, "instance", 28)


def run(xtr, ytr, xte, yte, epochs, aug, seed, verbose, dev="cpu", arch="convnet3"):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1000)
    net = make_net(arch).to(dev)
    xtr, ytr, xte, yte = xtr.to(dev), ytr.to(dev), xte.to(dev), yte.to(dev)
    lr = 0.01
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    n = xtr.shape[0]
    sync = torch.cuda.synchronize if dev != "cpu" else (lambda: None)
    sync()
    t0 = time.time()
    for ep in range(epochs):
        if ep == epochs // 2 and ep > 0:
            lr *= 0.1
            opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        net.train()
        perm = torch.randperm(n, generator=g)
        tot, correct, seen = torch.zeros((), device=dev), torch.zeros((), dtype=torch.long, device=dev), 0
        for b in range(0, n, 256):
            idx = perm[b:b + 256].to(dev)
            x, y = xtr[idx], ytr[idx]
            if aug == "dsa":
                x = dsa(x, g)
            out = net(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.detach() * len(idx)
            correct += (out.argmax(1) == y).sum()
            seen += len(idx)
        if verbose and (ep + 1) % 50 == 0:
            print("  epoch %d/%d loss %.4f train %.1f%% (%.0f s)" % (ep + 1, epochs, tot.item() / seen,
                                                                100 * correct.item() / seen, time.time() - t0),
                  file=sys.stderr)
    sync()
    seconds = time.time() - t0
    net.eval()
    correct = 0
    with torch.no_grad():
        for b in range(0, xte.shape[0], 256):
            correct += (net(xte[b:b + 256]).argmax(1) == yte[b:b + 256]).sum().item()
    return 100.0 * correct / xte.shape[0], seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="image folder (dap subset --out DIR)")
    ap.add_argument("--fmnist", help="Fashion-MNIST's folder (default: where dap looks: /usr/share/datasets/"
                    "fashion-mnist, then /usr/local/share/datasets/fashion-mnist)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--aug", default="none", choices=["none", "dsa"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32"])
    ap.add_argument("--arch", default="convnet3", choices=["convnet3", "resnetap10", "resnet18"])
    ap.add_argument("--json")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("eval_ref.py: --device cuda: torch sees no GPU")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = a.precision == "tf32"
    elif a.precision != "fp32":
        sys.exit("eval_ref.py: --precision tf32 needs --device cuda")
    if not a.fmnist:
        dirs = ["/usr/share/datasets/fashion-mnist", "/usr/local/share/datasets/fashion-mnist"]
        found = [d for d in dirs if os.path.isfile(os.path.join(d, "t10k-images-idx3-ubyte.gz"))]
        if not found:
            sys.exit("eval_ref.py: Fashion-MNIST not found in %s (--fmnist DIR)" % " or ".join(dirs))
        a.fmnist = found[0]
    xs, ys = load_folder(a.train)
    xtr, ytr = normalise(xs), torch.from_numpy(ys)
    xte = normalise(load_idx(os.path.join(a.fmnist, "t10k-images-idx3-ubyte.gz")).astype(np.float32))
    yte = torch.from_numpy(load_idx(os.path.join(a.fmnist, "t10k-labels-idx1-ubyte.gz")).astype(np.int64))
    accs, runs = [], []
    for r in range(a.runs):
        acc, sec = run(xtr, ytr, xte, yte, a.epochs, a.aug, a.seed + r, not a.quiet, a.device, a.arch)
        print("run %d/%d: test accuracy %.2f%% (%.1f s)" % (r + 1, a.runs, acc, sec), file=sys.stderr)
        accs.append(acc)
        runs.append({"seed": a.seed + r, "accuracy": acc, "seconds": sec})
    mean, std = float(np.mean(accs)), float(np.std(accs))
    print("pytorch " + a.arch + " on %s (%d images, %d epochs, aug %s): test accuracy %.2f +- %.2f over %d runs"
          % (a.train, len(ys), a.epochs, a.aug, mean, std, a.runs))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"train": a.train, "epochs": a.epochs, "aug": a.aug, "device": a.device, "precision": a.precision, "arch": a.arch, "runs": runs, "mean": mean, "std": std}, f,
                      indent=1)


if __name__ == "__main__":
    main()
