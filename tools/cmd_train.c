/*
 * cmd_train.c: `dap train`: trains a class-conditional DiT on a labelled image set
 * (eps-prediction, classifier-free-guidance dropout, AdamW, EMA), with a progress
 * line, a held-out validation loss and atomic checkpoints that --resume continues
 * bit-exactly. --minimax fine-tunes a prior (--init) with the two terms of Minimax
 * diffusion (src/diffusion/minimax.h; docs/methods.md).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/core.h"
#include "core/device.h"
#include "data/dataset.h"
#include "diffusion/train.h"
#include "latent.h"
#include "models/dit.h"

static void fmt_duration(double s, char *out, size_t n) {
    if (!(s >= 0.0) || s > 1e8) {
        snprintf(out, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(out, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(out, n, "%lds", t);
}

static int same_config(const dap_dit_config *a, const dap_dit_config *b) {
    return a->input_size == b->input_size && a->in_channels == b->in_channels && a->patch == b->patch &&
           a->hidden == b->hidden && a->depth == b->depth && a->heads == b->heads &&
           a->num_classes == b->num_classes && a->learn_sigma == b->learn_sigma &&
           a->mlp_ratio == b->mlp_ratio && (a->class_dropout > 0) == (b->class_dropout > 0);
}

/* Whether argv sets --NAME (as "--NAME V" or "--NAME=V"): the --minimax defaults give way. */
static int flag_given(int argc, char **argv, const char *name) {
    const size_t n = strlen(name);
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--", 2) && !strncmp(argv[i] + 2, name, n) && (!argv[i][2 + n] || argv[i][2 + n] == '='))
            return 1;
    return 0;
}

int cmd_train(int argc, char **argv) {
    const char *data = "fmnist", *config = NULL, *out = NULL, *init = NULL, *lr_decay = "none", *trainable = NULL, *device = NULL;
    const char *precision = NULL, *gpu_s = NULL;
    const char *vae_path = NULL, *cache_s = NULL;
    int minimax = 0, memory_size = 64;
    double lambda_pos = 0.002, lambda_neg = 0.008;
    int decay_start = 0, resume = 0, steps = 10000, batch = 32, ckpt_every = 1000, val_every = 1000, log_every = 50;
    int val_per_class = -1, val_cap = 100, seed = 0, split_seed = 0, threads = 0, ema_warmup = 1;
    int image_size = 0, channels = 0;
    double lr = 1e-4, ema = 0.9999, wd = 0.0, clip = 1.0, dropout = 0.1, val_frac = 0.1;
    flag flags[] = {
        {"data", FLAG_STR, &data, "fmnist, fmnist:DIR, an IDX image file or an image folder (ROOT/train/<class>/ or ROOT/<class>/)"},
        {"config", FLAG_STR, &config, "model: px-T|S|B|L[/P] (geometry from the data; see below), fm-*, DiT-*; default px-B, or the checkpoint's with --resume or --init"},
        {"image-size", FLAG_INT, &image_size, "train at this size (images resized, centre-cropped; 0: the data's)", 0, 4096},
        {"channels", FLAG_INT, &channels, "train with 1 (gray) or 3 (RGB) channels (0: the data's)", 0, 3},
        {"vae", FLAG_STR, &vae_path, "a latent prior (--init CHECKPOINT or --config DiT-*): train on the data's latents by this VAE, labelled with the model's classes"},
        {"latent-cache", FLAG_STR, &cache_s, "with --vae: folder of the data's cached latents (default OUT.latent-cache); share it with dap distill"},
        {"out", FLAG_STR, &out, "checkpoint FILE (EMA weights; FILE.state holds the training state)"},
        {"resume", FLAG_BOOL, &resume, "continue from FILE.state if it exists"},
        {"init", FLAG_STR, &init, "start from these weights (a dap checkpoint of the same config; fresh optimizer)"},
        {"steps", FLAG_INT, &steps, "total optimisation steps", 1, FLAG_INT_MAX},
        {"batch", FLAG_INT, &batch, "images per step", 1, 100000},
        {"lr", FLAG_FLOAT, &lr, "AdamW learning rate", 1e-12, 10},
        {"lr-decay", FLAG_STR, &lr_decay, "none, linear or cosine: from --decay-start down to 0 at --steps"},
        {"decay-start", FLAG_INT, &decay_start, "step where --lr-decay begins (the lr is --lr before it)", 0, FLAG_INT_MAX},
        {"wd", FLAG_FLOAT, &wd, "AdamW weight decay", 0, 10},
        {"ema", FLAG_FLOAT, &ema, "EMA decay of the saved weights", 0, 0.999999999},
        {"ema-warmup", FLAG_INT, &ema_warmup, "1: EMA decay min(ema, (1+s)/(10+s)) at step s", 0, 1},
        {"clip", FLAG_FLOAT, &clip, "max global gradient norm (0: off)", 0, 1000000000},
        {"class-dropout", FLAG_FLOAT, &dropout, "probability of the null label (for guidance)", 0, 1},
        {"ckpt-every", FLAG_INT, &ckpt_every, "checkpoint every N steps (and at the end)", 1, FLAG_INT_MAX},
        {"val-every", FLAG_INT, &val_every, "validation loss every N steps (0: only at the end)", 0, FLAG_INT_MAX},
        {"val-per-class", FLAG_INT, &val_per_class, "images per class held out for validation (0: none; -1: --val-frac of each class, at most --val-cap)", -1, 1000000},
        {"val-frac", FLAG_FLOAT, &val_frac, "share of each class held out for validation (with --val-per-class -1)", 0, 0.99},
        {"val-cap", FLAG_INT, &val_cap, "at most this many per class (with --val-per-class -1)", 0, 1000000},
        {"split-seed", FLAG_INT, &split_seed, "seed of the train/validation split", 0, FLAG_INT_MAX},
        {"log-every", FLAG_INT, &log_every, "progress line every N steps", 1, FLAG_INT_MAX},
        {"seed", FLAG_INT, &seed, "seed of initialisation, data order, timesteps and noise", 0, FLAG_INT_MAX},
        {"trainable", FLAG_STR, &trainable, "all, or difffit (biases and the label table only; default with --minimax)"},
        {"minimax", FLAG_BOOL, &minimax, "Minimax diffusion fine-tune of --init (Gu et al., CVPR 2024): --lr 1e-3, --batch 8, --clip 0 and --trainable difffit unless given"},
        {"lambda-pos", FLAG_FLOAT, &lambda_pos, "--minimax: weight of the representativeness term", 0, 1000},
        {"lambda-neg", FLAG_FLOAT, &lambda_neg, "--minimax: weight of the diversity term", 0, 1000},
        {"memory-size", FLAG_INT, &memory_size, "--minimax: rows of each class's real and generated memory", 1, 100000},
        {"device", FLAG_STR, &device, "cpu or cuda: where the DiT trains (cuda: weights, gradients, AdamW and the EMA stay on the GPU; a build made with make CUDA=1; default $DAP_DEVICE, else cpu)"},
        {"precision", FLAG_STR, &precision, "fp32 | tf32 | bf16: the GPU's matrix products (cuda only; default fp32)"},
        {"gpu", FLAG_STR, &gpu_s, CLI_GPU_HELP},
        CLI_THREADS_FLAG(&threads),
    };
    const int nflags = (int)(sizeof flags / sizeof flags[0]);
    const char *pos[1];
    int npos;
    char about[2048];
    snprintf(about, sizeof about,
             "Trains a class-conditional DiT (eps-prediction). The image size, channels and classes\n"
             "come from --data (or --image-size / --channels); the checkpoint records them, the class\n"
             "names and the data. Model configs (--config):\n");
    dap_dit_configs_help(about + strlen(about), sizeof about - strlen(about));
    int rc = flags_parse("train", "--data DIR --out FILE [--config px-S] [flags]", about,
                         flags, nflags, argc, argv, pos, 0, &npos);
    if (rc) return rc == 1 ? 0 : rc;
    if (!out) return cli_failf("train", "--out FILE is required");
    if (trainable && strcmp(trainable, "all") && strcmp(trainable, "difffit"))
        return cli_failf("train", "--trainable: expected all or difffit, found '%s'", trainable);
    if (minimax) {
        if (!init)
            return cli_failf("train", "--minimax fine-tunes a trained prior: --init FILE is required (e.g. --init "
                                      "models/fmnist-dit.safetensors)");
        dap_dit_config ic;
        if ((rc = dap_dit_config_from_file(init, &ic))) return cli_fail("train", rc);
        if (!flag_given(argc, argv, "lr")) lr = 1e-3;
        if (!flag_given(argc, argv, "batch")) batch = 8;
        if (!flag_given(argc, argv, "clip")) clip = 0.0;
        if (!trainable) trainable = "difffit";
    } else if (flag_given(argc, argv, "lambda-pos") || flag_given(argc, argv, "lambda-neg") ||
               flag_given(argc, argv, "memory-size")) {
        return cli_failf("train", "--lambda-pos, --lambda-neg and --memory-size apply with --minimax only");
    }
    if (cli_check_writable("out", out)) return cli_fail("train", DAP_ERR_IO);
    if (steps < 0 || batch < 1 || ckpt_every < 1 || val_every < 0 || log_every < 1 || val_per_class < -1 || seed < 0 ||
        split_seed < 0 || val_cap < 0)
        return cli_failf("train", "--steps, --seed, --split-seed, --val-every, --val-cap must be >= 0, --val-per-class "
                                  ">= -1 and --batch, --ckpt-every, --log-every >= 1");
    if (!(val_frac >= 0 && val_frac < 1)) return cli_failf("train", "--val-frac: expected 0 <= F < 1, found %g", val_frac);
    if (image_size < 0 || image_size > 4096)
        return cli_failf("train", "--image-size: expected 1..4096 (0: the data's), found %d", image_size);
    if (channels != 0 && channels != 1 && channels != 3)
        return cli_failf("train", "--channels: expected 1 or 3 (0: the data's), found %d", channels);
    int schedule = DAP_DIT_LR_CONSTANT;
    if (!strcmp(lr_decay, "linear")) schedule = DAP_DIT_LR_LINEAR;
    else if (!strcmp(lr_decay, "cosine")) schedule = DAP_DIT_LR_COSINE;
    else if (strcmp(lr_decay, "none"))
        return cli_failf("train", "--lr-decay: expected none, linear or cosine, found '%s'", lr_decay);
    if (cli_select_device("train", device, precision, gpu_s)) return 1;
    if (cache_s && !vae_path) return cli_failf("train", "--latent-cache needs --vae (a latent prior)");
    if (vae_path && !dap_file_exists(vae_path)) return cli_failf("train", "--vae %s: no such file", vae_path);
    cli_apply_threads(threads);

    /* The model config: --config, or on resume the checkpoint's (which --config must match). */
    char state_file[4096];
    snprintf(state_file, sizeof state_file, "%s.state", out);
    /* the state is written before PATH: a run killed in between at its first checkpoint has a
     * state without PATH (and its model config); a new run makes the same bytes */
    const int have_state = resume && dap_file_exists(state_file);
    const int resuming = have_state && dap_file_exists(out);
    if (have_state && !resuming)
        fprintf(stderr, "dap train: %s exists but %s does not (stopped while writing its first checkpoint): starting a "
                        "new run\n", state_file, out);
    else if (resume && !resuming)
        fprintf(stderr, "dap train: %s not found: starting a new run\n", state_file);
    dap_dit_config mc;
    if (resuming) {
        rc = dap_dit_config_from_file(out, &mc);
        if (rc) return cli_fail("train", rc);
        if (config) {
            dap_dit_config given;
            if ((rc = dap_dit_config_by_name(config, &given))) return cli_fail("train", rc);
            if (dap_dit_config_fit(&given, mc.input_size, mc.in_channels, mc.num_classes) || !same_config(&given, &mc))
                return cli_failf("train", "--config %s differs from the model config of %s", config, out);
        }
    } else if (init && !config) { /* a warm start takes its checkpoint's config */
        if ((rc = dap_dit_config_from_file(init, &mc))) return cli_fail("train", rc);
    } else if ((rc = dap_dit_config_by_name(config ? config : "px-B", &mc))) {
        return cli_fail("train", rc);
    }
    /* what the model config came from, for the messages below */
    const char *model_from = resuming ? out : config ? config : init ? init : "px-B";
    if (dropout > 0 && !(mc.class_dropout > 0)) mc.class_dropout = (float)dropout;
    /* the geometry: a config that fixes it (fm-*, DiT-*, a checkpoint's) has the data
     * converted to it; a pixel family (px-*) takes the data's, or --image-size / --channels */
    if (mc.input_size && image_size && image_size != mc.input_size)
        return cli_failf("train", "--image-size %d: the model (%s) takes %dx%d images", image_size,
                         model_from, mc.input_size, mc.input_size);
    if (mc.in_channels && channels && channels != mc.in_channels)
        return cli_failf("train", "--channels %d: the model (%s) takes %d channels", channels, model_from,
                         mc.in_channels);

    dap_dataset full = {0}, train = {0}, val = {0};
    if (vae_path) { /* a latent prior: the data's latents, under the model's labels */
        if (image_size || channels)
            return cli_failf("train", "--vae: the model's config fixes the size (drop --image-size / --channels)");
        char cache_dir[4096];
        snprintf(cache_dir, sizeof cache_dir, "%s.latent-cache", out);
        if ((rc = latent_train_set(data, vae_path, cache_s ? cache_s : cache_dir, resuming ? out : init, &mc, &full)))
            return cli_fail("train", rc);
    } else if ((rc = dap_dataset_load(&full, data, "train", mc.input_size ? mc.input_size : image_size,
                                      mc.in_channels ? mc.in_channels : channels)))
        return cli_fail("train", rc);
    if (full.h != full.w) {
        dap_dataset_free(&full);
        return cli_failf("train", "%s: the images are %dx%d (H x W), not square: give --image-size N to resize and "
                                  "centre-crop them", data, full.h, full.w);
    }
    {
        char note[256];
        if (dap_dataset_prep_note(&full, note, sizeof note)) fprintf(stderr, "dap train: data %s: %s\n", data, note);
    }
    if ((rc = dap_dit_config_fit(&mc, full.h, full.c, full.num_classes))) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", dap_last_error());
        dap_dataset_free(&full);
        return cli_failf("train", "--config %s on %s (%dx%dx%d, %d classes): %s%s", model_from,
                         data, full.c, full.h, full.w, full.num_classes, msg,
                         resuming ? "" : " (the px-* configs take any size, channels and classes)");
    }
    fprintf(stderr, "dap train: model %dx%dx%d, %d classes, patch %d (%d tokens), hidden %d, depth %d\n",
            mc.in_channels, mc.input_size, mc.input_size, mc.num_classes, mc.patch,
            (mc.input_size / mc.patch) * (mc.input_size / mc.patch), mc.hidden, mc.depth);
    const int have_val = val_per_class != 0 && (val_per_class > 0 || (val_frac > 0 && val_cap > 0));
    if (val_per_class > 0) {
        dap_dataset_split(&full, val_per_class, (unsigned long long)split_seed, &train, &val);
        fprintf(stderr, "dap train: validation: %d images per class held out (--val-per-class)\n", val_per_class);
    } else if (have_val) {
        const int most = dap_dataset_split_fraction(&full, val_frac, val_cap, (unsigned long long)split_seed, &train, &val);
        fprintf(stderr, "dap train: validation: %g%% of each class, at most %d, held out: %d images (up to %d a class)\n",
                100 * val_frac, val_cap, val.n, most);
    }
    const dap_dataset *tr_data = have_val ? &train : &full;

    dap_dit *model = NULL;
    dap_trainer *tr = NULL;
    if ((rc = dap_dit_create(&model, &mc, 1))) goto done;
    dap_dit_init(model, (uint64_t)seed);
    /* the checkpoint names its classes and its data (sample and distill read them) */
    for (int k = 0; k < full.num_classes; k++)
        if (!full.class_names[k][0] || strchr(full.class_names[k], '\n')) {
            rc = dap_error(DAP_ERR_VALUE, "%s: class %d has an empty name or one with a line break", data, k);
            goto fail_model;
        }
    dap_dit_set_class_names(model, full.class_names, full.num_classes);
    {
        char *abs = strncmp(data, "fmnist", 6) ? realpath(data, NULL) : NULL;
        dap_dit_set_train_data(model, abs ? abs : data);
        free(abs);
    }
    if (init && !resuming) {
        dap_dit_config ic;
        if ((rc = dap_dit_config_from_file(init, &ic))) goto fail_model;
        if (!same_config(&ic, &mc)) {
            rc = dap_error(DAP_ERR_SHAPE, "--init %s has another model config than --config", init);
            goto fail_model;
        }
        if ((rc = dap_params_load(&model->params, init, NULL, 0))) goto fail_model;
        fprintf(stderr, "dap train: weights initialised from %s\n", init);
    }
    /* the weights go up once they are final; the trainer takes its optimiser up beside them */
    if ((rc = dap_dit_to_device(model)) || (rc = dap_dit_train_fits(model, batch, "--batch"))) goto fail_model;
    if (model->dev)
        fprintf(stderr, "dap train: %s, precision %s\n", dap_device_describe(), dap_precision_name(dap_device_precision()));
    dap_train_config tc;
    dap_train_config_default(&tc);
    tc.batch = batch;
    tc.lr = lr;
    tc.weight_decay = wd;
    tc.ema_decay = ema;
    tc.ema_warmup = ema_warmup;
    tc.grad_clip = (float)clip;
    tc.class_dropout = (float)dropout;
    tc.seed = (uint64_t)seed;
    tc.lr_schedule = schedule;
    tc.decay_start = decay_start;
    tc.decay_end = steps;
    tc.trainable = trainable && !strcmp(trainable, "difffit") ? DAP_TRAIN_DIFFFIT : DAP_TRAIN_ALL;
    tc.minimax = minimax;
    tc.lambda_pos = lambda_pos;
    tc.lambda_neg = lambda_neg;
    tc.memory_size = memory_size;
    if ((rc = dap_trainer_create(&tr, model, tr_data, &tc))) {
    fail_model:
        dap_dit_destroy(model);
        goto done;
    }
    if (minimax) { /* the checkpoint records what it is: dap distill --method minimax checks it */
        char rec[1024];
        snprintf(rec, sizeof rec, "%s steps=%d lr=%.9g batch=%d init=%s", model->finetune, steps, lr, batch, init);
        if (strchr(rec, '\n')) {
            rc = dap_error(DAP_ERR_ARG, "--init: the path holds a line break");
            goto done;
        }
        dap_dit_set_finetune(model, rec);
        size_t n = 0;
        for (int k = 0; k < model->params.n; k++) n += model->params.p[k].frozen ? 0 : model->params.p[k].numel;
        fprintf(stderr, "dap train: minimax fine-tune: lambda-pos %g, lambda-neg %g, memory %d a class, %s: %zu of %zu "
                        "weights train, lr %g, clip %g\n", lambda_pos, lambda_neg, memory_size, trainable, n,
                model->params.total, lr, clip);
    }
    if (resuming) {
        if ((rc = dap_trainer_resume(tr, out))) goto done;
        fprintf(stderr, "dap train: resumed %s at step %lld\n", out, (long long)tr->step);
    }
    fprintf(stderr, "dap train: %d train / %d val images, %d params, batch %d, steps %lld -> %d\n", tr_data->n,
            have_val ? val.n : 0, (int)model->params.total, batch, (long long)tr->step, steps);
    if (schedule != DAP_DIT_LR_CONSTANT)
        fprintf(stderr, "dap train: lr %g to step %d, then %s decay to 0 at step %d\n", lr, decay_start, lr_decay,
                steps);

    const double t0 = dap_time_now();
    const int64_t step0 = tr->step;
    double loss_sum = 0.0, pos_sum = 0.0, neg_sum = 0.0;
    int loss_n = 0;
    while (tr->step < steps) {
        float gnorm = 0.0f;
        const double step_lr = dap_train_lr(&tr->cfg, tr->step);
        const double loss = dap_trainer_step(tr, &gnorm);
        if (!isfinite(loss)) {
            rc = dap_error(DAP_ERR_VALUE, "loss is %g at step %lld (try a lower --lr)", loss, (long long)tr->step);
            goto done;
        }
        loss_sum += loss;
        pos_sum += tr->last_pos;
        neg_sum += tr->last_neg;
        loss_n++;
        const int64_t s = tr->step;
        if (s % log_every == 0 || s == steps) {
            const double el = dap_time_now() - t0;
            const double ips = (double)(s - step0) * batch / (el > 0 ? el : 1e-9);
            char eta[32];
            fmt_duration((double)(steps - s) * batch / ips, eta, sizeof eta);
            char terms[96] = "";
            if (minimax)
                snprintf(terms, sizeof terms, "  pos %.6f  neg %.6f", pos_sum / loss_n, neg_sum / loss_n);
            printf("step %lld/%d  loss %.5f%s  |g| %.3f  lr %.3g  %.1f img/s  ETA %s\n", (long long)s, steps,
                   loss_sum / loss_n, terms, gnorm, step_lr, ips, eta);
            fflush(stdout);
            loss_sum = pos_sum = neg_sum = 0.0;
            loss_n = 0;
        }
        if (have_val && val.n > 0 && ((val_every > 0 && s % val_every == 0) || s == steps)) {
            const double ve = dap_trainer_val_loss(tr, &val, (uint64_t)split_seed, 1);
            const double vr = dap_trainer_val_loss(tr, &val, (uint64_t)split_seed, 0);
            printf("step %lld  val loss  ema %.5f  raw %.5f\n", (long long)s, ve, vr);
            fflush(stdout);
        }
        if (s % ckpt_every == 0 || s == steps) {
            if ((rc = dap_trainer_save(tr, out))) goto done;
        }
    }
    if (tr->step == step0) {
        fprintf(stderr, "dap train: already at step %lld of %d; nothing to do\n", (long long)tr->step, steps);
        if (!resuming && (rc = dap_trainer_save(tr, out))) goto done;
    }
    fprintf(stderr, "dap train: wrote %s (+ .state) at step %lld\n", out, (long long)tr->step);
done:
    dap_trainer_destroy(tr);
    dap_dataset_free(&val);
    dap_dataset_free(&train);
    dap_dataset_free(&full);
    return rc ? cli_fail("train", rc) : 0;
}
