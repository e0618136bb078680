#!/usr/bin/python3
"""vae_torch.py: the PyTorch peer of bench/bench_vae.c: diffusers 0.27.2's AutoencoderKL at
sd-vae-ft-mse's size with seeded random weights, one measurement per process.

  /usr/bin/python3 bench/vae_torch.py --save FILE
        writes the random full-size weights (diffusers names, F32) for both sides
  /usr/bin/python3 bench/vae_torch.py --weights FILE --measure encode|decode|vjp
        [--size 256] [--batch 1] [--warmup 1] [--iters 3] [--threads 2] [--device cpu|cuda]
  /usr/bin/python3 bench/vae_torch.py --weights FILE --check DAP.safetensors
        holds dap's latent and decode (bench_vae --check) against diffusers' on the same
        image and weights: prints the largest differences, exits 1 when they are large

encode: 0.18215 * posterior mean of a (batch, 3, size, size) image in [-1, 1];
decode: the image of a (batch, 4, size/8, size/8) latent / 0.18215. torch.no_grad, float32.
Prints one JSON line: per-iteration seconds, median, images/s, cpu_s (CPU seconds per
timed iteration, all threads), peak RSS (MB), and for scripts/gpu-diffusion-check.sh the
device, throughput and peak device memory (torch.cuda.max_memory_reserved, what the caching allocator took, as dit_torch.py; 0 on the cpu).
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

for extra in ("/opt/dapvenv/lib/python3.11/site-packages", "/usr/lib/python3/dist-packages"):
    if os.path.isdir(extra) and extra not in sys.path:
        sys.path.append(extra)

import torch  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402


def cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def sd_vae():
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                         layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=256)


def load_st(path):
    """safetensors F32 into torch tensors, with or without the safetensors package."""
    try:
        from safetensors.torch import load_file
        return load_file(path)
    except ImportError:
        import struct
        with open(path, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
            data = fh.read()
        out = {}
        for k, v in header.items():
            if k == "__metadata__":
                continue
            assert v["dtype"] == "F32", k
            a, b = v["data_offsets"]
            out[k] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).reshape(v["shape"])
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--save")
    ap.add_argument("--weights")
    ap.add_argument("--measure", choices=["encode", "decode", "vjp"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    if a.save:
        from safetensors.torch import save_file
        torch.manual_seed(0)
        m = sd_vae()
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, a.save)
        print(f"wrote {a.save}", file=sys.stderr)
        return
    torch.set_num_threads(a.threads)
    m = sd_vae().eval()
    m.load_state_dict(load_st(a.weights), strict=True)
    if a.check:
        d = load_st(a.check)
        with torch.no_grad():
            lat = 0.18215 * m.encode(d["x"]).latent_dist.mean
            dec = m.decode(d["latent"] / 0.18215).sample
        worst = 0.0
        for name, got, want in (("latent", d["latent"], lat), ("decoded", d["decoded"], dec)):
            err = (got - want).abs().max().item()
            rel = err / want.abs().max().item()
            worst = max(worst, rel)
            print(f"{name} {tuple(want.shape)}: max abs diff {err:.3g}, relative to the largest value {rel:.3g}")
        sys.exit(0 if worst < 1e-3 else 1)
    g = torch.Generator().manual_seed(1)
    s, f, dev = a.size, 8, torch.device(a.device)
    m = m.to(dev)
    if a.device == "cuda":  # FP32 as dap: no TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    if a.measure == "encode":
        x = (torch.rand(a.batch, 3, s, s, generator=g) * 2 - 1).to(dev)
        run = lambda: 0.18215 * m.encode(x).latent_dist.mean  # noqa: E731
    elif a.measure == "vjp":  # one latent: autograd's backward through the decoder (igd on a latent prior)
        a.batch = 1
        z = (torch.randn(1, 4, s // f, s // f, generator=g) * 0.18215 * 5).to(dev)
        r = torch.randn(1, 3, s, s, generator=g).to(dev)
        for p in m.parameters():
            p.requires_grad_(False)

        def run():
            zz = z.detach().requires_grad_(True)
            img = m.decode(zz / 0.18215).sample
            return torch.autograd.grad(img, zz, r)[0]
    else:
        z = (torch.randn(a.batch, 4, s // f, s // f, generator=g) * 0.18215 * 5).to(dev)
        run = lambda: m.decode(z / 0.18215).sample  # noqa: E731
    times, cpu0 = [], 0.0
    with torch.set_grad_enabled(a.measure == "vjp"):
        for i in range(a.warmup + a.iters):
            if i == a.warmup:
                cpu0 = cpu_seconds()
            t0 = time.perf_counter()
            run()
            sync()
            if i >= a.warmup:
                times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    peak = torch.cuda.max_memory_reserved() / 1048576.0 if a.device == "cuda" else 0.0
    print(json.dumps({"impl": "torch", "measure": "vae-" + a.measure, "precision": "fp32", "device": name,
                      "size": s, "batch": a.batch, "threads": a.threads,
                      "times_s": times, "median_s": med, "images_per_s": a.batch / med,
                      "throughput": a.batch / med, "unit": "images/s", "peak_device_mb": peak,
                      "cpu_s": (cpu_seconds() - cpu0) / a.iters,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
