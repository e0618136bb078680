#!/usr/bin/env python3
"""Exports the 8x8 handwritten digits that scikit-learn ships (Debian: python3-sklearn,
sklearn/datasets/data/digits.csv.gz: 1797 images, 17 gray levels, labels 0-9) as an image
folder dap reads: OUT/train/<digit>/<i>.png and OUT/test/<digit>/<i>.png, 8x8 gray PNGs.

The split is seeded and stratified: each class is shuffled with Python's random.Random(seed)
and its first round(test_frac x count) images go to test/. Only the standard library is
used (the CSV is read directly; PNGs are written with zlib), so any python3 runs it.

    python3 scripts/export-digits.py --out data/digits            # 1437 train / 360 test
    python3 scripts/export-digits.py --csv PATH --out DIR --test-frac 0.2 --seed 0
"""
import argparse
import gzip
import os
import random
import struct
import sys
import zlib

KNOWN = ["/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"]


def find_csv():
    for p in KNOWN:
        if os.path.exists(p):
            return p
    try:  # a pip-installed scikit-learn
        import sklearn  # noqa: F401

        p = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "data", "digits.csv.gz")
        if os.path.exists(p):
            return p
    except ImportError:
        pass
    return None


def png_gray(path, px, h, w):
    raw = b"".join(b"\x00" + bytes(px[r * w:(r + 1) * w]) for r in range(h))

    def chunk(tag, data):
        c = struct.pack(">I", len(data)) + tag + data
        return c + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output root (train/ and test/ are made in it)")
    ap.add_argument("--csv", default=None, help="digits.csv.gz (default: python3-sklearn's)")
    ap.add_argument("--test-frac", type=float, default=0.2, help="share of each class in test/")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split")
    a = ap.parse_args()
    csv = a.csv or find_csv()
    if not csv:
        sys.exit("export-digits: digits.csv.gz not found; install it: apt-get install python3-sklearn "
                 "(or pip install scikit-learn), or give --csv PATH")
    if not 0 < a.test_frac < 1:
        sys.exit("export-digits: --test-frac must be in (0, 1), got %g" % a.test_frac)
    by_class = {}
    with gzip.open(csv, "rt") as f:
        for n, line in enumerate(f, 1):
            v = [int(float(t)) for t in line.strip().split(",")]
            if len(v) != 65 or not all(0 <= t <= 16 for t in v[:64]) or not 0 <= v[64] <= 9:
                sys.exit("export-digits: %s line %d: expected 64 values in 0..16 and a label 0..9" % (csv, n))
            by_class.setdefault(v[64], []).append([(t * 255 + 8) // 16 for t in v[:64]])
    counts = {"train": 0, "test": 0}
    for k in sorted(by_class):
        imgs = by_class[k]
        order = list(range(len(imgs)))
        random.Random(a.seed * 1000 + k).shuffle(order)
        n_test = int(round(a.test_frac * len(imgs)))
        for rank, i in enumerate(order):
            split = "test" if rank < n_test else "train"
            d = os.path.join(a.out, split, str(k))
            os.makedirs(d, exist_ok=True)
            png_gray(os.path.join(d, "%04d.png" % i), imgs[i], 8, 8)
            counts[split] += 1
    print("export-digits: %s: %d train / %d test images, 10 classes, 8x8 gray" % (a.out, counts["train"], counts["test"]))


if __name__ == "__main__":
    main()
