/*
 * mgd3.c: mode guidance (MGD3), Chan-Santiago et al., "MGD^3:
 * Mode-Guided Dataset Distillation using Diffusion Models" (ICML 2025);
 * public code: github.com/jachansantiago/mode_guidance.
 *
 * The class's modes are the k-means centres (k = IPC) of its real data in the prior's
 * input space (pixels here, VAE latents for a latent DiT, as the paper clusters); sample
 * i is guided towards mode m_i for the first part of its trajectory by
 *     eps_hat = eps - sqrt(1 - a_t) lambda (m_i - x0_hat),   x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t),
 * i.e. classifier-style guidance with the energy E = lambda/2 |m_i - x0_hat|^2, and runs
 * unguided afterwards (the paper's stop step t_stop = 25 of 50: --stop 0.5). Defaults
 * (models/mgd3.flags): lambda 0.1, stop 25 of 50, CFG 4, 50 steps.
 */
#include <math.h>

#include "distill/methods.h"

double dap_mgd3_energy(float *grad, const float *x0, const float *mode, size_t per, double lambda) {
    double e = 0;
    for (size_t q = 0; q < per; q++) {
        const double d = (double)mode[q] - x0[q];
        e += d * d;
        if (grad) grad[q] = (float)(-lambda * d);
    }
    return 0.5 * lambda * e;
}

double dap_mgd3_adjust_eps(float *eps, const float *x_t, const float *modes, int n, size_t per, double a_t,
                           double lambda) {
    const double sa = sqrt(a_t), sb = sqrt(1.0 - a_t);
    double e = 0;
    for (int i = 0; i < n; i++) {
        float *ep = eps + (size_t)i * per;
        const float *xt = x_t + (size_t)i * per, *m = modes + (size_t)i * per;
        double ei = 0;
        for (size_t q = 0; q < per; q++) {
            const double x0 = (xt[q] - sb * ep[q]) / sa, d = m[q] - x0; /* -dE/dx0 / lambda */
            ei += d * d;
            ep[q] = (float)(ep[q] - sb * lambda * d);
        }
        e += 0.5 * lambda * ei;
    }
    return n ? e / n : 0;
}
