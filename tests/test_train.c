/*
 * test_train.c: the DiT training step on a tiny model and synthetic data: seeded runs
 * are reproducible, the validation loss falls when fitting a few images, the EMA
 * follows the weights, a save/resume continues bit-exactly, and mismatched data is
 * rejected with a message; the learning-rate decay is applied step by step. The Minimax
 * fine-tune: its terms change the update once a class has memories (and are nothing at
 * lambda 0), DiffFit moves only the biases and the label table, and a run is the same on 1
 * and 2 threads and after a save/resume, memories included.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "diffusion/train.h"
#include "test.h"

static const dap_dit_config k_tiny = {.input_size = 8, .in_channels = 1, .patch = 2, .hidden = 32,
                                      .depth = 1, .heads = 2, .num_classes = 3, .learn_sigma = 1,
                                      .mlp_ratio = 4.0f, .class_dropout = 0.1f};

/* n images of 8x8: class k is a bright horizontal bar at row 2k+1, plus small noise. */
static void make_data(dap_dataset *ds, int n, uint64_t seed) {
    memset(ds, 0, sizeof *ds);
    ds->n = n;
    ds->c = 1;
    ds->h = ds->w = 8;
    ds->num_classes = 3;
    ds->x = dap_alloc_f32((size_t)n * 64);
    ds->y = dap_calloc((size_t)n, sizeof(int));
    ds->class_names = dap_calloc(3, sizeof(char *));
    for (int k = 0; k < 3; k++) ds->class_names[k] = dap_strdup(k == 0 ? "a" : k == 1 ? "b" : "c");
    dap_rng r;
    dap_rng_init(&r, seed, 0);
    dap_rng_normal(&r, ds->x, (size_t)n * 64, 0.0f, 0.05f);
    for (int i = 0; i < n; i++) {
        ds->y[i] = i % 3;
        for (int j = 0; j < 64; j++) ds->x[(size_t)i * 64 + j] += (j / 8 == 2 * ds->y[i] + 1) ? 0.8f : -0.8f;
    }
    dap_dataset_index(ds);
}

static dap_train_config tiny_train_config(uint64_t seed, double lr) {
    dap_train_config tc;
    dap_train_config_default(&tc);
    tc.batch = 6;
    tc.lr = lr;
    tc.ema_decay = 0.9;
    tc.seed = seed;
    return tc;
}

static dap_trainer *make_trainer_with(const dap_dataset *ds, const dap_train_config *tc) {
    dap_dit *m = NULL;
    CHECK(dap_dit_create(&m, &k_tiny, 1) == DAP_OK);
    dap_dit_init(m, 1);
    dap_trainer *tr = NULL;
    CHECK(dap_trainer_create(&tr, m, ds, tc) == DAP_OK);
    return tr;
}

static dap_trainer *make_trainer(const dap_dataset *ds, uint64_t seed, double lr) {
    const dap_train_config tc = tiny_train_config(seed, lr);
    return make_trainer_with(ds, &tc);
}

DAP_TEST(train_reproducible_and_learns) {
    dap_dataset ds;
    make_data(&ds, 12, 5);
    const int steps = getenv("DAP_TEST_FAST") ? 20 : 30;
    dap_trainer *a = make_trainer(&ds, 7, 3e-3), *b = make_trainer(&ds, 7, 3e-3), *c = make_trainer(&ds, 8, 3e-3);
    const double v0 = dap_trainer_val_loss(a, &ds, 99, 0);
    double la = 0, lb = 0;
    for (int s = 0; s < steps; s++) {
        la = dap_trainer_step(a, NULL);
        lb = dap_trainer_step(b, NULL);
        if (s < 3) dap_trainer_step(c, NULL);
    }
    const double v1 = dap_trainer_val_loss(a, &ds, 99, 0), v1e = dap_trainer_val_loss(a, &ds, 99, 1);
    printf("  val loss %.4f -> %.4f (ema %.4f) after %d steps\n", v0, v1, v1e, steps);
    CHECK(la == lb);
    CHECK(memcmp(a->model->params.data, b->model->params.data, a->model->params.total * sizeof(float)) == 0);
    CHECK(memcmp(a->model->params.data, c->model->params.data, a->model->params.total * sizeof(float)) != 0);
    CHECK_MSG(v1 < 0.8 * v0, "val loss did not fall: %g -> %g", v0, v1);
    CHECK(v1e < v0);
    /* the validation loss is a fixed function of the weights */
    CHECK(dap_trainer_val_loss(a, &ds, 99, 0) == v1);
    /* frozen pos_embed untouched by AdamW, equal in the EMA */
    CHECK(memcmp(dap_params_ptr(&a->model->params, "pos_embed"), dap_params_ptr(&a->ema, "pos_embed"),
                 a->model->params.p[dap_params_find(&a->model->params, "pos_embed")].numel * sizeof(float)) == 0);
    dap_trainer_destroy(a);
    dap_trainer_destroy(b);
    dap_trainer_destroy(c);
    dap_dataset_free(&ds);
}

DAP_TEST(train_resume_bit_exact) {
    dap_dataset ds;
    make_data(&ds, 9, 6); /* 9 images, batch 6: epochs straddle batches */
    dap_trainer *a = make_trainer(&ds, 3, 1e-3), *b = make_trainer(&ds, 3, 1e-3);
    for (int s = 0; s < 5; s++) dap_trainer_step(a, NULL);
    for (int s = 0; s < 2; s++) dap_trainer_step(b, NULL);
    char path[512];
    snprintf(path, sizeof path, "%s/train_ck.safetensors", dap_test_tmpdir());
    CHECK(dap_trainer_save(b, path) == DAP_OK);
    dap_trainer_destroy(b);
    b = make_trainer(&ds, 3, 1e-3);
    int rc = dap_trainer_resume(b, path);
    CHECK_MSG(rc == DAP_OK, "resume: %s", dap_last_error());
    CHECK(b->step == 2);
    for (int s = 0; s < 3; s++) dap_trainer_step(b, NULL);
    const size_t n = a->model->params.total * sizeof(float);
    CHECK(memcmp(a->model->params.data, b->model->params.data, n) == 0);
    CHECK(memcmp(a->ema.data, b->ema.data, n) == 0);
    /* PATH holds the EMA weights, loadable as a model */
    dap_dit *m = NULL;
    rc = dap_dit_load(&m, path, 0, 0);
    CHECK_MSG(rc == DAP_OK, "load: %s", dap_last_error());
    dap_dit_destroy(m);
    /* another seed is refused */
    dap_trainer *c = make_trainer(&ds, 4, 1e-3);
    CHECK(dap_trainer_resume(c, path) == DAP_ERR_ARG);
    CHECK_MSG(strstr(dap_last_error(), "seed") != NULL, "message: %s", dap_last_error());
    dap_trainer_destroy(c);
    dap_trainer_destroy(a);
    dap_trainer_destroy(b);
    dap_dataset_free(&ds);
}

DAP_TEST(train_rejects_mismatched_data) {
    dap_dataset ds;
    make_data(&ds, 6, 1);
    ds.h = ds.w = 4; /* pretend 4x4 images */
    dap_dit *m = NULL;
    CHECK(dap_dit_create(&m, &k_tiny, 1) == DAP_OK);
    dap_train_config tc;
    dap_train_config_default(&tc);
    dap_trainer *tr = NULL;
    CHECK(dap_trainer_create(&tr, m, &ds, &tc) == DAP_ERR_SHAPE);
    CHECK_MSG(strstr(dap_last_error(), "1x8x8") != NULL, "message: %s", dap_last_error());
    CHECK(tr == NULL);
    ds.h = ds.w = 8;
    ds.y[2] = 5;
    CHECK(dap_trainer_create(&tr, m, &ds, &tc) == DAP_ERR_VALUE);
    dap_dit_destroy(m);
    dap_dataset_free(&ds);
}

DAP_TEST(train_lr_schedule) {
    dap_train_config c;
    dap_train_config_default(&c);
    c.lr = 1e-3;
    CHECK(dap_train_lr(&c, 0) == 1e-3 && dap_train_lr(&c, 1000000) == 1e-3);
    c.lr_schedule = DAP_DIT_LR_LINEAR;
    c.decay_start = 2;
    c.decay_end = 6;
    CHECK(dap_train_lr(&c, 1) == 1e-3 && dap_train_lr(&c, 2) == 1e-3);
    CHECK_NEAR(dap_train_lr(&c, 4), 0.5e-3, 1e-15);
    CHECK_NEAR(dap_train_lr(&c, 5), 0.25e-3, 1e-15);
    CHECK(dap_train_lr(&c, 6) == 0.0 && dap_train_lr(&c, 60) == 0.0);
    c.lr_schedule = DAP_DIT_LR_COSINE;
    CHECK_NEAR(dap_train_lr(&c, 3), 0.5e-3 * (1.0 + sqrt(0.5)), 1e-15);
    CHECK_NEAR(dap_train_lr(&c, 4), 0.5e-3, 1e-15);
    CHECK(dap_train_lr(&c, 2) == 1e-3 && dap_train_lr(&c, 6) == 0.0);

    /* the trainer uses it: once the rate is 0 the weights stop moving (no weight decay) */
    dap_dataset ds;
    make_data(&ds, 12, 2);
    dap_train_config tc = tiny_train_config(0, 1e-3);
    tc.lr_schedule = DAP_DIT_LR_LINEAR;
    tc.decay_start = 1;
    tc.decay_end = 3;
    dap_trainer *tr = make_trainer_with(&ds, &tc);
    const size_t n = tr->model->params.total * sizeof(float);
    float *w = dap_alloc_f32(tr->model->params.total);
    for (int s = 0; s < 3; s++) {
        memcpy(w, tr->model->params.data, n);
        dap_trainer_step(tr, NULL);
        CHECK_MSG(memcmp(w, tr->model->params.data, n) != 0, "step %d (lr %g) left the weights", s,
                  dap_train_lr(&tr->cfg, s));
    }
    memcpy(w, tr->model->params.data, n);
    dap_trainer_step(tr, NULL);
    dap_trainer_step(tr, NULL);
    CHECK(memcmp(w, tr->model->params.data, n) == 0);
    dap_free_aligned(w);
    dap_trainer_destroy(tr);

    /* a decay that ends where it starts, or an unknown schedule, is refused */
    dap_dit *m = NULL;
    CHECK(dap_dit_create(&m, &k_tiny, 1) == DAP_OK);
    tc.decay_start = 3;
    CHECK(dap_trainer_create(&tr, m, &ds, &tc) == DAP_ERR_ARG);
    CHECK_MSG(strstr(dap_last_error(), "--decay-start") != NULL, "message: %s", dap_last_error());
    tc.decay_start = 0;
    tc.lr_schedule = 7;
    CHECK(dap_trainer_create(&tr, m, &ds, &tc) == DAP_ERR_ARG);
    dap_dit_destroy(m);
    dap_dataset_free(&ds);
}

/* ---- Minimax fine-tune --------------------------------------------------------------- */

static dap_train_config minimax_config(double lp, double ln) {
    dap_train_config tc = tiny_train_config(11, 1e-2);
    tc.trainable = DAP_TRAIN_DIFFFIT;
    tc.minimax = 1;
    tc.lambda_pos = lp;
    tc.lambda_neg = ln;
    tc.memory_size = 5;
    return tc;
}

static int same_floats(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

/* A trainer on the tiny model with every weight perturbed (a trained prior's are not zero:
 * with DiT's zero-initialised modulations most biases would get no gradient). */
static dap_trainer *minimax_trainer(const dap_dataset *ds, const dap_train_config *tc) {
    dap_dit *m = NULL;
    CHECK(dap_dit_create(&m, &k_tiny, 1) == DAP_OK);
    dap_dit_init(m, 1);
    float *noise = dap_alloc_f32(m->params.total);
    dap_rng r;
    dap_rng_init(&r, 77, 0);
    dap_rng_normal(&r, noise, m->params.total, 0.0f, 0.05f);
    for (size_t i = 0; i < m->params.total; i++) m->params.data[i] += noise[i];
    dap_free_aligned(noise);
    dap_trainer *tr = NULL;
    CHECK(dap_trainer_create(&tr, m, ds, tc) == DAP_OK);
    return tr;
}

static int memory_rows(const dap_minimax *mm) {
    int n = 0;
    for (int k = 0; k < mm->num_classes; k++) n += mm->n_real[k];
    return n;
}

static int same_memories(const dap_minimax *a, const dap_minimax *b) {
    const size_t n = (size_t)a->num_classes * a->memory_size * a->per;
    return same_floats(a->real, b->real, n) && same_floats(a->gen, b->gen, n) &&
           !memcmp(a->n_real, b->n_real, (size_t)a->num_classes * sizeof(int)) &&
           !memcmp(a->n_gen, b->n_gen, (size_t)a->num_classes * sizeof(int));
}

DAP_TEST(train_minimax_terms_and_difffit) {
    dap_dataset ds;
    make_data(&ds, 12, 8);
    dap_train_config plain = minimax_config(0, 0);
    plain.minimax = 0;
    const dap_train_config mm = minimax_config(0.5, 0.5), zero = minimax_config(0, 0);
    dap_trainer *a = minimax_trainer(&ds, &plain), *b = minimax_trainer(&ds, &mm), *c = minimax_trainer(&ds, &zero);
    const dap_params *pa = &a->model->params, *pb = &b->model->params;
    float *w0 = dap_alloc_f32(pa->total);
    memcpy(w0, pa->data, pa->total * sizeof(float));
    /* step 1: the memories are empty, no term, the same update as the plain trainer */
    const double la = dap_trainer_step(a, NULL), lb = dap_trainer_step(b, NULL);
    dap_trainer_step(c, NULL);
    CHECK(la == lb && b->last_pos == 0 && b->last_neg == 0);
    CHECK(same_floats(pa->data, pb->data, pa->total));
    CHECK(memory_rows(&b->mm) == 6); /* the batch joined its classes' memories */
    /* then the terms act: other weights; at lambda 0 the same as the plain trainer */
    for (int s = 0; s < 3; s++) dap_trainer_step(a, NULL), dap_trainer_step(b, NULL), dap_trainer_step(c, NULL);
    printf("  after 4 steps: pos %.5f, neg %.5f\n", b->last_pos, b->last_neg);
    CHECK(b->last_pos > 0 && b->last_neg > 0);
    CHECK(!same_floats(pa->data, pb->data, pa->total));
    CHECK(same_floats(pa->data, c->model->params.data, pa->total));
    CHECK(b->mm.n_real[0] == 5 && b->mm.n_gen[2] == 5); /* 8 of each class seen, 5 kept */
    /* DiffFit: biases and the label table move, the other weights stay */
    int moved_frozen = 0, moved_train = 0, ntrain = 0;
    for (int k = 0; k < pb->n; k++) {
        const dap_param *p = &pb->p[k];
        const int moved = !same_floats(pb->data + p->offset, w0 + p->offset, p->numel);
        CHECK_MSG(p->frozen == !dap_train_difffit_key(p->key) || !strcmp(p->key, "pos_embed"), "%s: frozen %d", p->key,
                  p->frozen);
        if (p->frozen) moved_frozen += moved;
        else moved_train += moved, ntrain++;
    }
    CHECK_MSG(moved_frozen == 0, "%d frozen tensors moved", moved_frozen);
    CHECK_MSG(moved_train >= ntrain / 2, "%d of %d trainable tensors moved", moved_train, ntrain);
    CHECK(!pb->p[dap_params_find(pb, "y_embedder.embedding_table.weight")].frozen);
    CHECK(pb->p[dap_params_find(pb, "blocks.0.attn.qkv.weight")].frozen);
    CHECK(b->model->finetune && !strncmp(b->model->finetune, "minimax lambda_pos=0.5 ", 23));
    dap_free_aligned(w0);
    dap_trainer_destroy(a);
    dap_trainer_destroy(b);
    dap_trainer_destroy(c);
    dap_dataset_free(&ds);
}

DAP_TEST(train_minimax_threads_and_resume) {
    dap_dataset ds;
    make_data(&ds, 9, 4);
    const dap_train_config tc = minimax_config(0.3, 0.7);
    const int saved = dap_get_threads();
    dap_set_threads(1);
    dap_trainer *a = minimax_trainer(&ds, &tc);
    for (int s = 0; s < 6; s++) dap_trainer_step(a, NULL);
    dap_set_threads(2);
    dap_trainer *b = minimax_trainer(&ds, &tc);
    for (int s = 0; s < 6; s++) dap_trainer_step(b, NULL);
    const size_t n = a->model->params.total;
    CHECK_MSG(same_floats(a->model->params.data, b->model->params.data, n) && same_floats(a->ema.data, b->ema.data, n),
              "1 and 2 threads give other weights");
    CHECK_MSG(same_memories(&a->mm, &b->mm), "1 and 2 threads give other memories");
    dap_trainer_destroy(b);
    /* saved after 3 steps, resumed into a new trainer, 3 more: the uninterrupted run */
    dap_set_threads(1);
    b = minimax_trainer(&ds, &tc);
    for (int s = 0; s < 3; s++) dap_trainer_step(b, NULL);
    const char *path = dap_test_path("minimax_ck.safetensors");
    CHECK(dap_trainer_save(b, path) == DAP_OK);
    dap_trainer_destroy(b);
    b = minimax_trainer(&ds, &tc);
    int rc = dap_trainer_resume(b, path);
    CHECK_MSG(rc == DAP_OK, "resume: %s", dap_last_error());
    CHECK(b->step == 3 && memory_rows(&b->mm) > 0);
    for (int s = 0; s < 3; s++) dap_trainer_step(b, NULL);
    CHECK_MSG(same_floats(a->model->params.data, b->model->params.data, n) && same_floats(a->ema.data, b->ema.data, n),
              "a resumed run has other weights");
    CHECK_MSG(same_memories(&a->mm, &b->mm), "a resumed run has other memories");
    dap_trainer_destroy(b);
    /* the checkpoint says it is a Minimax fine-tune */
    char *ft = NULL;
    CHECK(dap_dit_finetune_from_file(path, &ft) == DAP_OK);
    CHECK_MSG(ft && strstr(ft, "minimax lambda_pos=0.3 lambda_neg=0.7 memory_size=5 trainable=difffit"), "finetune: %s",
              ft ? ft : "(none)");
    free(ft);
    /* other settings are refused, naming what differs */
    const dap_train_config other = minimax_config(0.3, 0.8);
    dap_train_config plain = tc, all = tc;
    plain.minimax = 0;
    all.trainable = DAP_TRAIN_ALL;
    const dap_train_config *bad[3] = {&other, &plain, &all};
    const char *says[3] = {"lambda_neg=0.7", "Minimax settings", "--trainable difffit"};
    for (int i = 0; i < 3; i++) {
        b = minimax_trainer(&ds, bad[i]);
        CHECK(dap_trainer_resume(b, path) == DAP_ERR_ARG);
        CHECK_MSG(strstr(dap_last_error(), says[i]) != NULL, "message %d: %s", i, dap_last_error());
        dap_trainer_destroy(b);
    }
    dap_set_threads(saved);
    dap_trainer_destroy(a);
    dap_dataset_free(&ds);
}
