/*
 * commands.h: the table of subcommands. Adding a command: write tools/cmd_<name>.c
 * exporting cmd_<name>, and add one X(...) line here.
 */
#ifndef DAP_COMMANDS_H
#define DAP_COMMANDS_H

/* X(name, summary) */
#define DAP_COMMANDS(X)                                                                        \
    X(train, "train a class-conditional DiT (eps-prediction, EMA, resumable)")                 \
    X(sample, "sample class-conditional images with DDIM + classifier-free guidance")

#define X(name, summary) int cmd_##name(int argc, char **argv);
DAP_COMMANDS(X)
#undef X

#endif
