#!/usr/bin/python3
"""Fixture for the DSA resampler (src/eval/augment.c, dap_aug_affine): images pushed
through scale and rotation matrices by F.affine_grid + F.grid_sample (bilinear, zero
padding, align_corners=True), as the DSA reference code does.
Writes tests/ref/augment_affine.safetensors: ref.x (3, 2, 28, 28), ref.theta (3, 6),
ref.out (3, 2, 28, 28). Run: /usr/bin/python3 tests/gen/augment_ref.py"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from classifier_ref import write_safetensors  # noqa: E402


def main():
    torch.manual_seed(5)
    x = torch.randn(3, 2, 28, 28, dtype=torch.float64)
    a = 12.0 / 180 * math.pi
    theta = torch.tensor([[1.15, 0, 0, 0, 0.86, 0],
                          [math.cos(a), -math.sin(a), 0, math.sin(a), math.cos(a), 0],
                          [0.9, 0.1, 0.05, -0.2, 1.1, -0.1]], dtype=torch.float64)
    grid = F.affine_grid(theta.view(3, 2, 3), list(x.shape), align_corners=True)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref", "augment_affine.safetensors")
    write_safetensors(path, {"ref.x": x.numpy(), "ref.theta": theta.numpy(), "ref.out": out.numpy()})
    print(path, os.path.getsize(path))


if __name__ == "__main__":
    main()
