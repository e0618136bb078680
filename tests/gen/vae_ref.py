#!/usr/bin/python3
"""vae_ref.py: reference fixtures for the C VAE (src/models/vae.c), made by diffusers
0.27.2's own AutoencoderKL.

Writes
  tests/ref/vae_tiny.safetensors      a small AutoencoderKL (4 levels, channels 8/16/24/24,
                                      GroupNorm 4 groups, 2 blocks per encoder level, 3 per
                                      decoder level: every block type of sd-vae-ft-mse:
                                      conv_shortcut, downsample, mid attention, upsample)
                                      with random weights, diffusers' current key names,
                                      F16 (the weights are rounded to F16 before the reference
                                      runs, so every copy below holds the same values);
                                      __metadata__ norm_num_groups = 4
  tests/ref/vae_tiny_old.safetensors  the same weights, diffusers' names before 0.14
                                      (attention query/key/value/proj_attn)
  tests/ref/vae_tiny_ldm.safetensors  the same weights, the original LDM / CompVis names
                                      (encoder.down.0.block.0, mid.attn_1.q as 1x1 convs,
                                      nin_shortcut, norm_out, decoder up levels reversed)
  tests/ref/vae_tiny_sd.safetensors   the LDM names under `first_stage_model.` with two
                                      unrelated tensors of a whole SD checkpoint beside them
  tests/ref/vae_tiny_ref.safetensors  ref.x (2, 3, 32, 32) in [-1, 1], ref.mean and
                                      ref.logvar (2, 4, 4, 4) of the posterior,
                                      ref.latent = 0.18215 * mean, ref.decoded =
                                      decode(ref.latent / 0.18215) (2, 3, 32, 32), and
                                      `latent` (= ref.latent) for dap vae decode's CLI tests
  tests/ref/sd_vae_ft_mse_keys.txt    "name d0 d1 ..." for every tensor of sd-vae-ft-mse's
                                      diffusion_pytorch_model.safetensors (sorted by name, as
                                      in its header); that file uses the attention names from
                                      before diffusers 0.14 (query/key/value/proj_attn)

Each renamed copy is converted back with diffusers' own converters
(_convert_deprecated_attention_blocks, convert_ldm_vae_checkpoint) and must load strictly
into the model and give the same state_dict.

Run from the repository root: /usr/bin/python3 tests/gen/vae_ref.py
(torch comes from Debian's python3; diffusers 0.27.2 from the /opt/dapvenv venv.)
"""
import os
import re
import sys

for extra in ("/opt/dapvenv/lib/python3.11/site-packages", "/usr/lib/python3/dist-packages"):
    if os.path.isdir(extra) and extra not in sys.path:
        sys.path.append(extra)  # appended: the interpreter's own numpy / torch stay first

import numpy as np  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_writer import save_safetensors  # noqa: E402


def _import_ldm_converter():
    """diffusers' own convert_ldm_vae_checkpoint. Its module imports transformers (for the
    text-encoder converters), which is not installed here; the VAE converter and the
    helpers it calls need none of it, so their definitions are taken from the module's
    source and run alone."""
    import ast
    import diffusers.pipelines.stable_diffusion as pkg

    path = os.path.join(os.path.dirname(pkg.__file__), "convert_from_ckpt.py")
    tree = ast.parse(open(path).read())
    want = {"shave_segments", "renew_vae_resnet_paths", "renew_vae_attention_paths",
            "assign_to_checkpoint", "conv_attn_to_linear", "convert_ldm_vae_checkpoint"}
    tree.body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in want]
    assert len(tree.body) == len(want)
    ns = {}
    exec(compile(tree, path, "exec"), ns)
    return ns["convert_ldm_vae_checkpoint"]


convert_ldm_vae_checkpoint = _import_ldm_converter()

assert diffusers.__version__ == "0.27.2", diffusers.__version__

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref")


def save(path, tensors, metadata=None, f16=False):
    save_safetensors(path, {k: t.detach().cpu().float().contiguous().numpy() for k, t in tensors.items()},
                     metadata, f16)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def make(ch, groups, sample=32):
    n = len(ch)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=ch,
                         layers_per_block=2, latent_channels=4, norm_num_groups=groups,
                         sample_size=sample)


# ---- renamings (the inverse of diffusers' converters) ---------------------------------

OLD_ATTN = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def to_old(sd):
    out = {}
    for k, v in sd.items():
        m = re.match(r"^(.*mid_block\.attentions\.0)\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$", k)
        out[f"{m.group(1)}.{OLD_ATTN[m.group(2)]}.{m.group(3)}" if m else k] = v
    return out


def to_ldm(sd, levels):
    out = {}
    ldm_attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for k, v in sd.items():
        new = k
        m = re.match(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$", k)
        if m:
            new = f"{m.group(1)}.mid.attn_1.{ldm_attn[m.group(2)]}.{m.group(3)}"
            if m.group(2) != "group_norm" and m.group(3) == "weight":
                v = v[:, :, None, None]  # LDM stores q/k/v/proj_out as 1x1 convs
        new = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.(\d)\.",
                     lambda m: f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.", new)
        new = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        new = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.",
                     lambda m: f"decoder.up.{levels - 1 - int(m.group(1))}.block.", new)
        new = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                     lambda m: f"decoder.up.{levels - 1 - int(m.group(1))}.upsample.", new)
        new = new.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        out[new] = v
    return out


def check_same(model, sd, what):
    ref = model.state_dict()
    assert set(sd) == set(ref), (what, set(sd) ^ set(ref))
    for k in ref:
        assert sd[k].shape == ref[k].shape and torch.equal(sd[k].float(), ref[k].float()), (what, k)
    clone = make(CH, GROUPS)
    clone.load_state_dict(sd, strict=True)
    print(f"{what}: diffusers' converter gives back all {len(ref)} tensors")


CH, GROUPS = (8, 16, 24, 24), 4


def main():
    torch.manual_seed(0)
    model = make(CH, GROUPS).eval()
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "norm" in k:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) * (1.3 / fan_in ** 0.5))
            p.copy_(p.half().float())  # every file below holds these exact values
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    levels = len(CH)
    meta = {"norm_num_groups": str(GROUPS)}

    old = to_old(sd)
    back = dict(old)
    model._convert_deprecated_attention_blocks(back)
    check_same(model, back, "old attention names")
    ldm = to_ldm(sd, levels)
    config = {"num_head_channels": None}
    check_same(model, convert_ldm_vae_checkpoint(ldm, config), "LDM names")
    whole = {"first_stage_model." + k: v for k, v in ldm.items()}
    whole["model.diffusion_model.out.2.weight"] = torch.zeros(4, 8, 3, 3)
    whole["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = torch.ones(8)
    check_same(model, convert_ldm_vae_checkpoint(whole, config), "first_stage_model. LDM names")

    save(os.path.join(ROOT, "vae_tiny.safetensors"), sd, meta, f16=True)
    save(os.path.join(ROOT, "vae_tiny_old.safetensors"), old, meta, f16=True)
    save(os.path.join(ROOT, "vae_tiny_ldm.safetensors"), ldm, meta, f16=True)
    save(os.path.join(ROOT, "vae_tiny_sd.safetensors"), whole, meta, f16=True)

    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        post = model.encode(x).latent_dist
        latent = 0.18215 * post.mean
        decoded = model.decode(latent / 0.18215).sample
    save(os.path.join(ROOT, "vae_tiny_ref.safetensors"),
         {"ref.x": x, "ref.mean": post.mean, "ref.logvar": post.logvar, "ref.latent": latent,
          "ref.decoded": decoded, "latent": latent})
    print("latent range", float(latent.min()), float(latent.max()),
          "decoded range", float(decoded.min()), float(decoded.max()))

    # sd-vae-ft-mse: diffusers' AutoencoderKL with the config of its config.json
    full = make((128, 256, 512, 512), 32, 256)
    keys = sorted(to_old(full.state_dict()).items())
    with open(os.path.join(ROOT, "sd_vae_ft_mse_keys.txt"), "w") as fh:
        for k, v in keys:
            fh.write(" ".join([k] + [str(d) for d in v.shape]) + "\n")
    total = sum(v.numel() for _, v in keys)
    print(f"sd_vae_ft_mse_keys.txt: {len(keys)} tensors, {total} parameters")


if __name__ == "__main__":
    main()
