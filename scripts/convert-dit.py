#!/usr/bin/env python3
"""convert-dit.py: an official DiT checkpoint (PyTorch .pt) -> safetensors for dap.

  python scripts/convert-dit.py DiT-XL-2-256x256.pt DiT-XL-2-256x256.safetensors [--f16]

Reads the released files (a plain state_dict: DiT-XL-2-256x256.pt, DiT-XL-2-512x512.pt)
and the DiT repo's training checkpoints ({"model", "ema", "opt", "args"}: the EMA weights
are taken, as its sample.py does; "model" when there is no "ema"). A "module." prefix
(DistributedDataParallel) is dropped. Tensors keep their PyTorch names and shapes, so
dap_dit_load reads the file unchanged and infers the config (DiT-XL/2 at 256 or 512 px,
or any other size) from the shapes; pos_embed is included. Written as F32 (or F16 with
--f16), without dap's config metadata. Needs torch (any version that reads the file).
"""
import argparse
import json
import os
import struct
import sys

import torch

REQUIRED = ["x_embedder.proj.weight", "pos_embed", "t_embedder.mlp.0.weight", "y_embedder.embedding_table.weight",
            "blocks.0.attn.qkv.weight", "final_layer.linear.weight"]


def state_dict_of(obj, path):
    if isinstance(obj, dict) and "ema" in obj and isinstance(obj["ema"], dict):
        print("%s: a training checkpoint; taking its EMA weights" % path, file=sys.stderr)
        obj = obj["ema"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        print("%s: a training checkpoint without EMA; taking its model weights" % path, file=sys.stderr)
        obj = obj["model"]
    if not isinstance(obj, dict):
        sys.exit("%s: expected a state_dict (or a checkpoint holding one under 'ema' / 'model'), found %s"
                 % (path, type(obj).__name__))
    sd = {}
    for k, v in obj.items():
        if not torch.is_tensor(v):
            continue
        sd[k[len("module."):] if k.startswith("module.") else k] = v
    missing = [k for k in REQUIRED if k not in sd]
    if missing:
        sys.exit("%s: not a DiT state_dict: no %s (found %d tensors, e.g. %s)"
                 % (path, ", ".join(missing), len(sd), ", ".join(list(sd)[:3])))
    return sd


def save(sd, path, f16, source):
    header, blobs, off = {"__metadata__": {"converted_by": "scripts/convert-dit.py", "source": source}}, [], 0
    for k in sorted(sd):
        t = sd[k].detach().to("cpu")
        if not t.is_floating_point():
            sys.exit("tensor %s has dtype %s, expected a float tensor" % (k, t.dtype))
        t = t.to(torch.float16 if f16 else torch.float32).contiguous()
        b = t.numpy().tobytes()
        header[k] = {"dtype": "F16" if f16 else "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp.%d" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)  # the whole file or nothing


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", help="official .pt checkpoint")
    ap.add_argument("dst", help="output .safetensors")
    ap.add_argument("--f16", action="store_true", help="store F16 (half the size; dap reads it back into F32)")
    a = ap.parse_args()
    try:
        obj = torch.load(a.src, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13 has no weights_only
        obj = torch.load(a.src, map_location="cpu")
    except Exception:  # a training checkpoint may hold an argparse.Namespace
        obj = torch.load(a.src, map_location="cpu", weights_only=False)
    sd = state_dict_of(obj, a.src)
    save(sd, a.dst, a.f16, os.path.basename(a.src))
    T, D = sd["pos_embed"].shape[1:]
    p = sd["x_embedder.proj.weight"].shape[2]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    print("%s: %d tensors, hidden %d, depth %d, patch %d, %dx%d latents -> %s"
          % (a.src, len(sd), D, depth, p, int(T ** 0.5) * p, int(T ** 0.5) * p, a.dst), file=sys.stderr)


main()
