#!/usr/bin/python3
"""Writes tests/ref/io_tiny.safetensors: a tiny safetensors file made independently of
dap's writer (pure Python + numpy), read by tests/test_safetensors.c and the CLI tests.
Tensors: "w" F32 (2, 3) = arange(6) * 0.5 - 1, "h" F16 (4,) = [1, -0.5, 65504, 2^-24],
"b" BF16 (2, 2) = [1, -2.5, 3.140625, 0.5], "n" I64 (1,) = 7; sorted the way the
official library sorts (by dtype size, then name), with __metadata__ {"format": "pt"}."""
import json, os, struct
import numpy as np

def bf16_bytes(a):
    u = np.asarray(a, np.float32).view(np.uint32)
    return ((u >> 16).astype('<u2')).tobytes()  # the values are exact in bf16

tensors = [
    ("w", "F32", [2, 3], (np.arange(6, dtype=np.float32) * 0.5 - 1).astype('<f4').tobytes()),
    ("n", "I64", [1], np.array([7], '<i8').tobytes()),
    ("h", "F16", [4], np.array([1, -0.5, 65504, 2.0 ** -24], '<f2').tobytes()),
    ("b", "BF16", [2, 2], bf16_bytes([1, -2.5, 3.140625, 0.5])),
]
tensors.sort(key=lambda t: (-len(t[3]) // max(1, int(np.prod(t[2]))), t[0]))
header, data = {"__metadata__": {"format": "pt"}}, b""
for name, dt, shape, raw in tensors:
    header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
    data += raw
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref", "io_tiny.safetensors")
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + data)
print(out, 8 + len(h) + len(data), "bytes")
