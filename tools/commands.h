/*
 * commands.h: the table of subcommands. Adding a command: write tools/cmd_<name>.c
 * exporting cmd_<name>, and add one X(...) line here.
 */
#ifndef DAP_COMMANDS_H
#define DAP_COMMANDS_H

/* X(name, summary) */
#define DAP_COMMANDS(X)                                                                        \
    X(info, "show a dataset: classes, counts, size, pixel statistics, example grid")          \
    X(inspect, "list the tensors, shapes and metadata of a safetensors file")                  \
    X(train, "train a class-conditional DiT (eps-prediction, EMA, resumable)")                 \
    X(sample, "sample class-conditional images with DDIM + classifier-free guidance")         \
    X(export, "rewrite a DiT checkpoint (config in the metadata), optionally as F16")          \
    X(distill, "distill a dataset: random, vanilla or dap (representativeness guidance)")      \
    X(score, "score an image set: class consistency, representativeness, diversity, FD")     \
    X(embed, "2-D PCA view of synthetic sets among the real images, per class (PNG, TSV)")    \
    X(eval, "train fresh networks on a set and report test accuracy (mean +- std)")            \
    X(subset, "write a random real subset (IPC per class) as an image folder")                 \
    X(teacher, "train a classifier on the full training split (teacher / feature extractor)")  \
    X(vae, "Stable Diffusion VAE: encode images to latents, decode latents to images")

#define X(name, summary) int cmd_##name(int argc, char **argv);
DAP_COMMANDS(X)
#undef X

#endif
