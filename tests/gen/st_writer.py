"""st_writer.py: a tiny safetensors writer for the fixture scripts (F32 tensors, or F16
for values F16 holds exactly; optional string metadata), so fixtures need neither the `safetensors` package nor dap's own writer.
Format: 8-byte little-endian header length, JSON header {name: {dtype, shape,
data_offsets}}, padded with spaces to 8 bytes, then the raw data."""
import json
import struct

import numpy as np


def save_safetensors(path, tensors, metadata=None, f16=False):
    """tensors: name -> array (numpy, or anything np.asarray takes: a CPU torch tensor).
    f16: store F16, asserting every value survives the rounding."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr, dtype=np.float32)
        if f16:
            h = a.astype(np.float16)
            assert np.array_equal(h.astype(np.float32), a), name
            a = h
        b = a.tobytes()
        dt = "F16" if f16 else "F32"
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
