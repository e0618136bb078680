#!/usr/bin/python3
"""dit_official_ref.py: a random official-architecture DiT saved as the DiT repo saves
it (torch.save), for scripts/convert-dit.py and dap_dit_load.

  python tests/gen/dit_official_ref.py OUTDIR

Writes OUTDIR/dit_official.pt (a plain state_dict, as DiT-XL-2-256x256.pt),
OUTDIR/dit_official_train.pt (a training checkpoint {"model", "ema", "opt", "args"} whose
"ema" holds the same weights and "model" others) and OUTDIR/dit_official_io.safetensors
(x, t, y and the PyTorch output eps). The module is tests/gen/dit_ref.py's, written from
the official models.py (timm's PatchEmbed, Attention, Mlp). The config (8x8x4 latents,
patch 2, hidden 64, depth 2, 10 classes, learn_sigma) is small; hidden 64 with two heads
of 32 (the heads of dap's named config of that width, as DiT-XL/2's 16 for 1152) is what dap infers
from the shapes alone, as it does for the released files. Weights are
rounded to F16 values so that an F16 conversion is exact.
With --ref: writes the converted file and the io file into tests/ref/ instead (the
committed fixture of test dit_official_converted).
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit_ref import DiT, randomize  # noqa: E402
from st_writer import save_safetensors  # noqa: E402

CFG = dict(input_size=8, patch=2, in_channels=4, hidden=64, depth=2, heads=2, num_classes=10, learn_sigma=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=None)
    ap.add_argument("--ref", action="store_true")
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "..", "ref") if a.ref else a.out
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4321)
    model = DiT(**CFG)
    randomize(model, gen)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    model.eval()
    x = torch.randn(3, 4, 8, 8, generator=gen)
    t = torch.tensor([999.0, 500.0, 3.0])
    y = torch.tensor([0, 7, 10])  # 10: the null class
    with torch.no_grad():
        eps = model(x, t, y)
    sd = model.state_dict()
    io = {"x": x.numpy(), "t": t.numpy(), "y": y.numpy().astype(np.float32), "out": eps.numpy()}
    if a.ref:
        pt = os.path.join(out, "dit_official_tmp.pt")
        torch.save(sd, pt)
        conv = os.path.join(here, "..", "..", "scripts", "convert-dit.py")
        subprocess.check_call([sys.executable, conv, pt, os.path.join(out, "dit_official_tiny.safetensors"), "--f16"])
        os.remove(pt)
        save_safetensors(os.path.join(out, "dit_official_tiny_io.safetensors"), io,
                         {"generator": "tests/gen/dit_official_ref.py --ref"})
        return
    torch.save(sd, os.path.join(out, "dit_official.pt"))
    other = {k: v + 0.5 for k, v in sd.items()}
    args = argparse.Namespace(model="DiT-tiny", image_size=64)  # as train.py stores its flags
    torch.save({"model": other, "ema": sd, "opt": {}, "args": args},
               os.path.join(out, "dit_official_train.pt"))
    save_safetensors(os.path.join(out, "dit_official_io.safetensors"), io, {"generator": "tests/gen/dit_official_ref.py"})


main()
