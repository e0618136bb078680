/*
 * bench_convnet.c: ConvNet-3 (128 ch, instance norm, 1x28x28, 10 classes) throughput of
 * dap: training steps (forward + backward + SGD, batch B) and inference (forward, eval
 * mode), in images per second. bench/bench_convnet.sh runs it beside the PyTorch peer
 * (bench/bench_convnet.py) and prints the ratios.
 *   bench_convnet [batch=256] [steps=5] [arch=convnet3|resnetap10|resnet18]
 * DAP_WINOGRAD=0|1|2 in the environment sets dap_conv2d_set_winograd (A/B of the
 * convolution algorithm; 1, the library's default, when unset).
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/blas.h"
#include "core/core.h"
#include "core/optim.h"
#include "eval/classifier.h"
#include "ops/ops.h"

int main(int argc, char **argv) {
    dap_blas_fix_core(argv);
    int bs = argc > 1 ? atoi(argv[1]) : 256, steps = argc > 2 ? atoi(argv[2]) : 5;
    const char *arch = argc > 3 ? argv[3] : "convnet3";
    if (dap_conv2d_winograd_from_env() != DAP_OK) {
        fprintf(stderr, "bench_convnet: %s\n", dap_last_error());
        return 2;
    }
    dap_classifier m;
    if (dap_classifier_create(&m, arch, 1, 28, 28, 10) != DAP_OK) {
        fprintf(stderr, "bench_convnet: %s\n", dap_last_error());
        return 1;
    }
    dap_classifier_init_weights(&m, 1);
    int in = dap_cnn_in_size(&m.net);
    dap_cnn_state s;
    dap_cnn_state_init(&s, &m.net, bs, 1);
    float *x = dap_alloc_f32((size_t)bs * in), *probs = dap_alloc_f32((size_t)bs * 10);
    float *dl = dap_alloc_f32((size_t)bs * 10);
    int *y = malloc(sizeof(int) * bs);
    dap_rng r;
    dap_rng_init(&r, 1, 1);
    dap_rng_normal(&r, x, (size_t)bs * in, 0, 1);
    for (int i = 0; i < bs; i++) y[i] = i % 10;
    dap_sgd opt;
    dap_sgd_init(&opt, &m.net.params, 0.9, 5e-4);
    opt.decay_all = 1;
    double best_train = 1e30, best_inf = 1e30;
    for (int it = 0; it < steps + 1; it++) { /* first step warms up */
        double t0 = dap_time_now();
        const float *logits = dap_cnn_forward(&m.net, &s, x, bs, 1);
        dap_xent_forward(probs, logits, y, bs, 10);
        dap_xent_backward(dl, probs, y, bs, 10, 1.0f);
        dap_params_zero_grad(&m.net.params);
        dap_cnn_backward(&m.net, &s, x, dl, NULL, 1);
        dap_sgd_step(&opt, &m.net.params, 0.01);
        double t1 = dap_time_now();
        dap_cnn_forward(&m.net, &s, x, bs, 0);
        double t2 = dap_time_now();
        if (it > 0 && t1 - t0 < best_train) best_train = t1 - t0;
        if (it > 0 && t2 - t1 < best_inf) best_inf = t2 - t1;
    }
    int mode = dap_conv2d_winograd_mode();
    printf("dap     %s batch %d threads %d winograd %d: train %.1f img/s, inference %.1f img/s\n", arch, bs,
           dap_get_threads(), mode, bs / best_train, bs / best_inf);
    return 0;
}
