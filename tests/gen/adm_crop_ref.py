"""adm_crop_ref.py: tests/ref/adm_crop.safetensors, the DiT / ADM centre crop
(center_crop_arr of the DiT repo's train.py, written here from its description) done by
PIL on three generated RGB images, for dap_image_center_crop_adm.

Tensors per case i: in<i> (H, W, 3) the input bytes as floats, out<i> (S, S, 3) PIL's
result, size<i> (1) the crop size S. Run: python tests/gen/adm_crop_ref.py (needs numpy
and Pillow; made with Pillow 9.5.0, the DiT code's era, whose two-pass resize always runs
the horizontal pass first; Pillow 13 picks the order by cost on some sizes and then
differs by a few levels)."""
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from st_writer import save_safetensors  # noqa: E402


def center_crop_arr(pil_image, image_size):
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y:crop_y + image_size, crop_x:crop_x + image_size]


def image(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([127 + 120 * np.sin(x / 7.0 + c) * np.cos(y / 5.0 - c) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)


cases = [(70, 130, 32), (90, 40, 32), (33, 35, 48), (100, 70, 16)]  # (H, W, S): halving, down, up, two odd halvings
t = {}
for i, (h, w, s) in enumerate(cases):
    a = image(h, w, i)
    out = center_crop_arr(Image.fromarray(a, "RGB"), s)
    assert out.shape == (s, s, 3)
    t["in%d" % i] = a.astype(np.float32)
    t["out%d" % i] = out.astype(np.float32)
    t["size%d" % i] = np.array([s], np.float32)
path = os.path.join(os.path.dirname(__file__), "..", "ref", "adm_crop.safetensors")
save_safetensors(path, t, {"generator": "tests/gen/adm_crop_ref.py", "pillow": Image.__version__})
print("wrote", path)
