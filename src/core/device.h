/*
 * device.h: where the classifiers run. A process-wide choice, made once before any
 * model state is created (`dap eval --device`, or $DAP_DEVICE):
 *   cpu  - the ops of ops.h (always there);
 *   cuda - the CUDA backend (src/cuda/): a classifier state keeps its activations, its
 *          gradients and a copy of the weights on the GPU; the optimiser, the loss and
 *          the data pipeline stay on the host (weights go up before each forward,
 *          gradients come down after each backward). Only in a build made with
 *          `make CUDA=1`.
 * Results on the two devices agree to float rounding, not bit for bit.
 */
#ifndef DAP_DEVICE_H
#define DAP_DEVICE_H

typedef enum { DAP_DEVICE_CPU = 0, DAP_DEVICE_CUDA = 1 } dap_device_kind;

/* "cpu" or "cuda". DAP_ERR_ARG for another name; for "cuda", DAP_ERR_MISSING naming why
 * (a build without CUDA, no device, a driver error). The choice is left as it was on
 * error. */
int dap_device_select(const char *name);
/* Applies $DAP_DEVICE when set and not empty (same errors). */
int dap_device_from_env(void);
int dap_device(void);
const char *dap_device_name(void);  /* "cpu", or "cuda" */
/* A line naming the device (the GPU's name and memory for cuda). */
const char *dap_device_describe(void);
/* 1 when this build has the CUDA backend. */
int dap_device_cuda_built(void);

/* Which GPU (`--gpu`): an index among the visible devices (CUDA_VISIBLE_DEVICES applies
 * first), or DAP_GPU_AUTO for the launcher's local rank (dap_launcher_local_rank) modulo
 * the device count, so that N processes on one machine take N GPUs. Set it before
 * dap_device_select("cuda"); the default is 0. DAP_ERR_ARG for another negative value. */
#define DAP_GPU_AUTO (-1)
int dap_device_set_gpu(int index);
int dap_device_gpu(void);

/* This process's place among the processes its launcher started, from the environment:
 * Open MPI's mpirun (OMPI_COMM_WORLD_RANK / _SIZE), MPICH and Intel MPI (PMI_RANK /
 * PMI_SIZE), a Slurm job array (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN over
 * SLURM_ARRAY_TASK_STEP, of SLURM_ARRAY_TASK_COUNT) or srun (SLURM_PROCID / SLURM_NTASKS),
 * looked up in that order. DAP_OK with *rank, *size and *which (the variables' names) set;
 * DAP_ERR_MISSING when none is set; DAP_ERR_ARG naming the variable when one is malformed
 * or the rank is outside 0..size-1. */
int dap_launcher_rank(int *rank, int *size, const char **which);
/* The process's rank on its machine (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID,
 * SLURM_LOCALID), or -1 when no launcher set one. */
int dap_launcher_local_rank(void);

/* The arithmetic of the device's matrix products (`--precision`); the CPU computes in FP32
 * only.
 *   fp32 - the reference (the default);
 *   tf32 - TF32 tensor cores (10-bit mantissa inputs), FP32 accumulation;
 *   bf16 - BF16 tensor cores (8-bit mantissa inputs), FP32 accumulation (compute 8.0+).
 * Storage is FP32, except the DiT under bf16: its weight matrices and the activations its
 * products read are BF16 there, with FP32 master weights for training (cuda/cuda.h). */
typedef enum { DAP_PRECISION_FP32 = 0, DAP_PRECISION_TF32 = 1, DAP_PRECISION_BF16 = 2 } dap_precision;
/* Sets the precision for what runs on the selected device from now on. DAP_ERR_ARG for an
 * unknown name, for tf32/bf16 on the cpu device, and for bf16 on a GPU without it. NULL or
 * "" keeps fp32. Select the device first. */
int dap_device_set_precision(const char *name);
int dap_device_precision(void);
const char *dap_precision_name(int p);

#endif /* DAP_DEVICE_H */
