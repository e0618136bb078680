#!/usr/bin/python3
"""dit_torch.py: the PyTorch peer of bench/bench_dit.c, one measurement per process.

The DiT modules are those of tests/gen/dit_ref.py (the reference the C model is tested
against). The shapes come from `build/bench_dit --config NAME --print-config` (passed as
--model JSON by bench/run.sh), so both sides run the same model. Prints one JSON line.

  /usr/bin/python3 bench/dit_torch.py --model '{...}' --config NAME \
      --measure train|ddim|guide|guidemean|cfg10|fwd32 [--warmup 2] [--iters 5] [--threads 2]
      [--device cpu|cuda] [--precision fp32|tf32|bf16]

--device cuda runs the model on the GPU (eager attention, as tests/gen/dit_ref.py; the
model is made and perturbed there, with a generator on the device). --precision sets the
matrix products as dap's do: fp32 (TF32 off), tf32 (allow_tf32), bf16. Under bf16, train
runs in torch.autocast(bfloat16) (FP32 weights, BF16 products), as dap's trainer; the
inference measures follow --bf16: cast (default: the model and its input in bfloat16, the
output back to float32: BF16 storage, as dap's inference model) or autocast. (PyTorch's
float32_matmul_precision "medium" is TF32 on CUDA, not BF16: not used.) peak_device_mb is
torch.cuda.max_memory_reserved (what the caching allocator took from the device).

--device meta is a dry run of the device code path on a machine without a GPU: every
tensor on PyTorch's meta device, which refuses an operation that meets a tensor left on the
CPU; nothing is computed or timed (one step, then a JSON line with "dry_run": true).

Measurements (as in bench_dit.c):
  train  forward + eps-MSE + backward + clip_grad_norm_ + AdamW at batch 64    (images/s)
  ddim   one DDIM step with CFG at batch 100 (a forward over 200 samples), torch.no_grad
  guide  100 real samples to block l under no_grad, 10 synthetic to block l with grad,
         flattened features, linear-kernel energy mean_j |s_i - r_j| (torch.cdist),
         backward to the 10 inputs only (weights do not require grad)          (steps/s)
  guidemean  the same with the tokens' mean as the features (--pool mean)
  cfg10  an unguided DDIM + CFG step at batch 10
  fwd32  one inference forward at batch 32, t = 500, no CFG
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "gen"))
from dit_ref import DiT  # noqa: E402

TRAIN_BATCH, DDIM_BATCH, GUIDE_REAL, GUIDE_SYN, CFG_SCALE = 64, 100, 100, 10, 4.0


def rss_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def machine_busy_s():
    """CPU seconds of the whole machine (user nice system irq softirq steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def self_cpu_s():
    t = os.times()
    return t.user + t.system


def make_model(cfg, gen):
    """On DEV: made there (DiT-XL/2 takes seconds on a CPU), perturbed with a generator there."""
    model = DiT(input_size=cfg["input_size"], patch=cfg["patch"], in_channels=cfg["in_channels"],
                hidden=cfg["hidden"], depth=cfg["depth"], heads=cfg["heads"],
                num_classes=cfg["num_classes"], learn_sigma=cfg["learn_sigma"],
                mlp_ratio=cfg["mlp_ratio"], class_dropout=cfg["class_dropout"],
                device=None if DEV.type == "cpu" else DEV)
    if DEV.type == "meta":
        return model
    g = gen if DEV.type == "cpu" else torch.Generator(device=DEV).manual_seed(0)
    # default init, then every trainable tensor perturbed like bench_dit.c's perturb()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "pos_embed":
                continue
            sd = 0.5 / math.sqrt(p[0].numel()) if p.dim() >= 2 else 0.02
            p.add_(torch.randn(p.shape, generator=g, device=p.device) * sd)
    return model


def abar(t):
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)[t].item()


DEV = torch.device("cpu")


def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


class Bf16(torch.nn.Module):
    """The model in bfloat16 behind float32 inputs and outputs (--bf16 cast)."""

    def __init__(self, m):
        super().__init__()
        self.m = m.to(torch.bfloat16)

    def forward(self, x, t, y, stop_block=0):
        return self.m(x.to(torch.bfloat16), t, y, stop_block=stop_block).float()


def ddim_workload(model, cfg, gen, B):
    C, H, K = cfg["in_channels"], cfg["input_size"], cfg["num_classes"]
    x = torch.randn(B, C, H, H, generator=gen).to(DEV)
    y = torch.cat([torch.arange(B) % K, torch.full((B,), K)]).to(DEV)
    t = torch.full((2 * B,), 500.0, device=DEV)
    a_t, a_prev = abar(500), abar(480)
    model.requires_grad_(False)

    def step():
        with torch.no_grad():
            out = model(torch.cat([x, x]), t, y)
            cond, null = out[:B, :C], out[B:, :C]
            eps = null + CFG_SCALE * (cond - null)
            x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
            return math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps

    return step


def setup(measure, model, cfg, gen):
    C, H, K = cfg["in_channels"], cfg["input_size"], cfg["num_classes"]
    if measure == "train":
        B = TRAIN_BATCH
        x = torch.randn(B, C, H, H, generator=gen).to(DEV)
        noise = torch.randn(B, C, H, H, generator=gen).to(DEV)
        t = torch.randint(0, 1000, (B,), generator=gen).float().to(DEV)
        y = torch.randint(0, K + 1, (B,), generator=gen).to(DEV)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        # on the GPU, the EMA as DiT's train.py updates it (dap's device step includes it)
        ema = [p.detach().clone() for p in params] if DEV.type == "cuda" else []

        def step():
            opt.zero_grad(set_to_none=True)
            loss = ((model(x, t, y)[:, :C] - noise) ** 2).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            with torch.no_grad():
                for e, p in zip(ema, params):
                    e.mul_(0.9999).add_(p, alpha=1 - 0.9999)

        return step
    if measure == "ddim":
        return ddim_workload(model, cfg, gen, DDIM_BATCH)
    if measure == "fwd32":
        x = torch.randn(32, C, H, H, generator=gen).to(DEV)
        y = (torch.arange(32) % K).to(DEV)
        t = torch.full((32,), 500.0, device=DEV)
        model.requires_grad_(False)

        def step():
            with torch.no_grad():
                return model(x, t, y)

        return step
    if measure == "cfg10":
        return ddim_workload(model, cfg, gen, GUIDE_SYN)
    if measure in ("guide", "guidemean"):
        l = cfg["layer"]
        pool = (lambda f: f.mean(1)) if measure == "guidemean" else (lambda f: f.flatten(1))
        xr = torch.randn(GUIDE_REAL, C, H, H, generator=gen).to(DEV)
        xs0 = torch.randn(GUIDE_SYN, C, H, H, generator=gen).to(DEV)
        t = torch.full((GUIDE_REAL,), 500.0, device=DEV)
        y = torch.full((GUIDE_REAL,), 3, dtype=torch.long, device=DEV)
        model.requires_grad_(False)

        def step():
            with torch.no_grad():
                fr = pool(model(xr, t, y, stop_block=l))
            xs = xs0.clone().requires_grad_(True)
            fs = pool(model(xs, t[:GUIDE_SYN], y[:GUIDE_SYN], stop_block=l))
            energy = torch.cdist(fs, fr).mean(1)
            energy.sum().backward()
            return xs.grad

        return step
    raise SystemExit("dit_torch.py: unknown --measure %s" % measure)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="JSON shapes from bench_dit --print-config")
    ap.add_argument("--config", default="?")
    ap.add_argument("--measure", default="train", choices=["train", "ddim", "guide", "guidemean", "cfg10", "fwd32"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "meta"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--bf16", default="cast", choices=["cast", "autocast"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    global DEV
    DEV = torch.device(a.device)
    if a.device == "meta":
        pass
    elif a.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("dit_torch.py: --device cuda: torch sees no GPU")
        torch.backends.cuda.matmul.allow_tf32 = a.precision == "tf32"
        torch.backends.cudnn.allow_tf32 = a.precision == "tf32"
        torch.set_float32_matmul_precision("high" if a.precision == "tf32" else "highest")
    elif a.precision != "fp32":
        raise SystemExit("dit_torch.py: --precision %s needs --device cuda" % a.precision)
    cfg = json.loads(a.model)
    base = rss_mb("VmRSS")
    gen = torch.Generator().manual_seed(0)
    model = make_model(cfg, gen).to(DEV)
    bf16 = None if a.precision != "bf16" else "autocast" if a.measure == "train" else a.bf16
    if bf16 == "cast":
        model = Bf16(model)
    step0 = setup(a.measure, model, cfg, gen)

    def step():
        if bf16 == "autocast" and DEV.type == "cuda":  # (a meta dry run: the same step, no autocast)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                r = step0()
        else:
            r = step0()
        sync()
        return r

    if a.device == "meta":
        reached = "all"
        try:
            step()
        except NotImplementedError as e:  # the meta device has no convolution backward
            if "convolution_backward" not in str(e):
                raise
            reached = "up to the patch embedding's backward"
        print(json.dumps({"impl": "torch", "device": "meta", "dry_run": True, "reached": reached, "config": a.config,
                          "measure": a.measure, "precision": a.precision, "bf16": bf16}))
        return

    for _ in range(a.warmup):
        step()
    times = []
    busy0, self0, wall0 = machine_busy_s(), self_cpu_s(), time.perf_counter()
    for _ in range(a.iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    wall, own = time.perf_counter() - wall0, self_cpu_s() - self0
    foreign = max(0.0, (machine_busy_s() - busy0 - own) / (wall * os.cpu_count()))
    med = statistics.median(times)
    n = {"train": TRAIN_BATCH, "ddim": DDIM_BATCH, "guide": GUIDE_SYN, "guidemean": GUIDE_SYN, "cfg10": GUIDE_SYN,
         "fwd32": 32}[a.measure]
    dev = {"device": "cpu", "precision": "fp32", "peak_device_mb": 0.0}
    if DEV.type == "cuda":
        dev = {"device": torch.cuda.get_device_name(), "precision": a.precision,
               "bf16": bf16,
               "peak_device_mb": round(torch.cuda.max_memory_reserved() / 1048576.0, 1)}
    print(json.dumps({
        "impl": "torch", "torch": torch.__version__, **dev, "config": a.config, "measure": a.measure, "batch": n,
        "layer": cfg["layer"], "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"), "warmup": a.warmup, "iters": a.iters,
        "times_s": [round(v, 6) for v in times], "median_s": round(med, 6), "min_s": round(min(times), 6),
        "throughput": round((1.0 if a.measure.startswith("guide") else n) / med, 4),
        "unit": "steps/s" if a.measure.startswith("guide") else "images/s",
        "cpu_s": round(own, 3), "foreign_cpu": round(foreign, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "base_rss_mb": round(base, 1)}))


if __name__ == "__main__":
    main()
