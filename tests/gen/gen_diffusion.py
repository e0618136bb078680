#!/usr/bin/python3
"""Prints the reference numbers inlined in tests/test_diffusion.c: DiT's
space_timesteps spacing, the linear schedule's alpha_bar (numpy float64, as DiT's
gaussian_diffusion.py) and DDIM sigma values. Run: /usr/bin/python3 tests/gen/gen_diffusion.py"""
import numpy as np


def space(T, S):  # DiT respace.space_timesteps(T, str(S)), one section
    stride = (T - 1) / (S - 1) if S > 1 else 1
    cur, out = 0.0, []
    for _ in range(S):
        out.append(round(cur))
        cur += stride
    return out


betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
ab = np.cumprod(1.0 - betas)
for S in (50, 10, 7, 1):
    print("S=%d:" % S, ", ".join(str(t) for t in space(1000, S)))
for t in (0, 1, 499, 998, 999):
    print("alpha_bar[%d] = %.17g" % (t, ab[t]))
taus = space(1000, 50)
for i in (49, 25, 1, 0):
    a_t = ab[taus[i]]
    a_p = ab[taus[i - 1]] if i > 0 else 1.0
    sig = 0.5 * np.sqrt((1 - a_p) / (1 - a_t)) * np.sqrt(1 - a_t / a_p)
    print("eta 0.5, t=%d t_prev=%s: sigma = %.17g" % (taus[i], taus[i - 1] if i > 0 else -1, sig))
