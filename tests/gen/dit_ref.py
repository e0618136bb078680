#!/usr/bin/python3
"""dit_ref.py: PyTorch reference fixtures for the C DiT (src/models/dit.c).

The modules below follow the official facebookresearch/DiT models.py (with timm's
PatchEmbed, Attention and Mlp written out, since timm is not installed), so the
state_dict keys and shapes are the official ones.

Writes
  tests/ref/dit_small.safetensors  a small config with random non-zero weights (adaLN and
                                   final layer included): inputs, full output, block-2
                                   features, gradients of sum(out * R) w.r.t. every
                                   parameter and x, the input gradient of sum(feat2 * R2),
                                   and a 30-step AdamW eps-MSE loss curve.
  tests/ref/dit_xl2_keys.txt       "name d0 d1 ..." per DiT-XL/2 state_dict entry (built on
                                   the meta device: nothing allocated).

Run from the repository root: /usr/bin/python3 tests/gen/dit_ref.py
"""
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn

import os, sys  # noqa: E401
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_writer import save_safetensors  # noqa: E402

# ---- the model ---------------------------------------------------------------------


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class PatchEmbed(nn.Module):  # timm PatchEmbed: conv p x p stride p, flatten, transpose
    def __init__(self, img, p, cin, d, device=None):
        super().__init__()
        self.patch_size = (p, p)
        self.num_patches = (img // p) ** 2
        self.proj = nn.Conv2d(cin, d, kernel_size=p, stride=p, bias=True, device=device)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):  # timm Attention, qkv_bias=True
    def __init__(self, d, heads, device=None):
        super().__init__()
        self.heads = heads
        self.scale = (d // heads) ** -0.5
        self.qkv = nn.Linear(d, 3 * d, bias=True, device=device)
        self.proj = nn.Linear(d, d, device=device)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        att = (q @ k.transpose(-2, -1)) * self.scale
        att = att.softmax(dim=-1)
        x = (att @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):  # timm Mlp with tanh-GELU
    def __init__(self, d, hid, device=None):
        super().__init__()
        self.fc1 = nn.Linear(d, hid, device=device)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hid, d, device=device)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TimestepEmbedder(nn.Module):
    def __init__(self, d, freq=256, device=None):
        super().__init__()
        self.freq = freq
        self.mlp = nn.Sequential(nn.Linear(freq, d, bias=True, device=device), nn.SiLU(),
                                 nn.Linear(d, d, bias=True, device=device))

    @staticmethod
    def timestep_embedding(t, dim, max_period=10000):
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t):
        return self.mlp(self.timestep_embedding(t, self.freq).to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes, d, dropout, device=None):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout > 0), d, device=device)

    def forward(self, y):  # eval: labels as given (num_classes = the null class)
        return self.embedding_table(y)


class DiTBlock(nn.Module):
    def __init__(self, d, heads, mlp_ratio=4.0, device=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, heads, device=device)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(d, int(d * mlp_ratio), device=device)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d, bias=True, device=device))

    def forward(self, x, c):
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + g1.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh1, sc1))
        x = x + g2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sh2, sc2))
        return x


class FinalLayer(nn.Module):
    def __init__(self, d, p, cout, device=None):
        super().__init__()
        self.norm_final = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(d, p * p * cout, bias=True, device=device)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d, bias=True, device=device))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def sincos_1d(dim, pos):
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim, gs):
    grid = np.meshgrid(np.arange(gs, dtype=np.float32), np.arange(gs, dtype=np.float32))  # w first
    grid = np.stack(grid, axis=0).reshape([2, 1, gs, gs])
    return np.concatenate([sincos_1d(dim // 2, grid[0]), sincos_1d(dim // 2, grid[1])], axis=1)


class DiT(nn.Module):
    def __init__(self, input_size, patch, in_channels, hidden, depth, heads, num_classes,
                 learn_sigma, mlp_ratio=4.0, class_dropout=0.1, device=None):
        super().__init__()
        self.cin = in_channels
        self.cout = in_channels * 2 if learn_sigma else in_channels
        self.p = patch
        self.x_embedder = PatchEmbed(input_size, patch, in_channels, hidden, device=device)
        self.t_embedder = TimestepEmbedder(hidden, device=device)
        self.y_embedder = LabelEmbedder(num_classes, hidden, class_dropout, device=device)
        T = self.x_embedder.num_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, T, hidden, device=device), requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden, heads, mlp_ratio, device=device) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden, patch, self.cout, device=device)
        if device is None or str(device) != "meta":
            pe = sincos_2d(hidden, int(T ** 0.5))
            self.pos_embed.data.copy_(torch.from_numpy(pe).float().unsqueeze(0))

    def unpatchify(self, x):
        c, p = self.cout, self.p
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(shape=(x.shape[0], h, w, p, p, c))
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(shape=(x.shape[0], c, h * p, h * p))

    def forward(self, x, t, y, stop_block=0):
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        for i, blk in enumerate(self.blocks):
            x = blk(x, c)
            if stop_block == i + 1:
                return x
        return self.unpatchify(self.final_layer(x, c))


# ---- fixtures -------------------------------------------------------------------------

SMALL = dict(input_size=8, patch=2, in_channels=2, hidden=32, depth=3, heads=4, num_classes=5,
             learn_sigma=True)
B = 3
STEPS = 30


def randomize(model, gen):
    """Random non-zero weights everywhere (pos_embed stays the fixed sin-cos)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "pos_embed":
                continue
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / math.sqrt(fan_in)))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        model.y_embedder.embedding_table.weight.mul_(2.0)


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref")
    os.makedirs(root, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    model = DiT(**SMALL)
    randomize(model, gen)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}

    out = {}
    for k, v in init.items():
        out[k] = v.numpy()
    C, H = SMALL["in_channels"], SMALL["input_size"]
    cout = 2 * C if SMALL["learn_sigma"] else C
    x = torch.randn(B, C, H, H, generator=gen)
    t = torch.tensor([3.0, 500.0, 999.0])
    y = torch.tensor([1, SMALL["num_classes"], 4])  # the middle one is the null class
    R = torch.randn(B, cout, H, H, generator=gen)
    T = (H // SMALL["patch"]) ** 2
    R2 = torch.randn(B, T, SMALL["hidden"], generator=gen)

    # full forward and gradients of sum(out * R)
    xr = x.clone().requires_grad_(True)
    o = model(xr, t, y)
    (o * R).sum().backward()
    out.update({"ref.x": x.numpy(), "ref.t": t.numpy(), "ref.y": y.float().numpy(),
                "ref.R": R.numpy(), "ref.out": o.detach().numpy(), "ref.dx": xr.grad.numpy(),
                "ref.R2": R2.numpy()})
    for k, p in model.named_parameters():
        if p.requires_grad:
            out["grad." + k] = p.grad.numpy().copy()

    # block-2 features and the input gradient of sum(feat * R2)
    xr = x.clone().requires_grad_(True)
    f = model(xr, t, y, stop_block=2)
    (f * R2).sum().backward()
    out["ref.feat2"] = f.detach().numpy()
    out["ref.dx_feat2"] = xr.grad.numpy()

    # 30 AdamW steps on the eps-MSE loss (first C channels), fixed x_t, noise, t, y per step
    x0 = torch.randn(B, C, H, H, generator=gen)
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    noise = torch.randn(STEPS, B, C, H, H, generator=gen)
    ts = torch.randint(0, 1000, (STEPS, B), generator=gen)
    ys = torch.randint(0, SMALL["num_classes"] + 1, (STEPS, B), generator=gen)
    a = torch.from_numpy(abar[ts.numpy()]).view(STEPS, B, 1, 1, 1)
    xts = (a.sqrt() * x0.double() + (1 - a).sqrt() * noise.double()).float()
    model.zero_grad()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    losses = []
    for s in range(STEPS):
        opt.zero_grad()
        eps = model(xts[s], ts[s].float(), ys[s])[:, :C]
        loss = ((eps - noise[s]) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out.update({"train.xt": xts.numpy(), "train.noise": noise.numpy(), "train.t": ts.float().numpy(),
                "train.y": ys.float().numpy(), "train.losses": np.array(losses, dtype=np.float32)})
    meta = {"model": "dit", **{k: str(int(v)) for k, v in SMALL.items()}}
    save_safetensors(os.path.join(root, "dit_small.safetensors"), out, meta)
    print("losses", " ".join("%.5f" % l for l in losses))

    # DiT-XL/2 keys and shapes, on the meta device
    xl = DiT(input_size=32, patch=2, in_channels=4, hidden=1152, depth=28, heads=16, num_classes=1000,
             learn_sigma=True, device="meta")
    with open(os.path.join(root, "dit_xl2_keys.txt"), "w") as fh:
        for k, v in xl.state_dict().items():
            fh.write(k + " " + " ".join(str(d) for d in v.shape) + "\n")


if __name__ == "__main__":
    main()
