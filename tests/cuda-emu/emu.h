/*
 * emu.h (cuda-emu): what the emulator's three parts share. emu_runtime.cpp owns device
 * memory, streams and the diagnostics; emu_threads.cpp runs a grid's GPU threads on fibers;
 * emu_cublas.cpp does the matrix products. Not seen by the translated .cu files.
 */
#ifndef DAP_CUDA_EMU_EMU_H
#define DAP_CUDA_EMU_EMU_H

#include <cuda_runtime.h>

#include <functional>
#include <string>
#include <vector>

namespace emu {

/* The environment's settings, read once:
 *   DAP_EMU_MEM_MB   the device's memory in MiB (16384): cudaMemGetInfo reports it less what
 *                    is allocated, and cudaMalloc fails beyond it
 *   DAP_EMU_ASYNC    1: work runs as late as CUDA allows (at the synchronisation that must
 *                    wait for it), so a missing wait shows as stale or NaN data; 0 (default):
 *                    each call's work runs before the call returns
 *   DAP_EMU_PROTECT  1 (default): device memory is inaccessible to host code and to kernels
 *                    not given a pointer into it (a fault names the allocation); 0: off
 *   DAP_EMU_REVERSE  1: the blocks of a grid and the threads of a block run last first (a
 *                    result that changes shows a missing __syncthreads, or blocks racing)
 *   DAP_EMU_TRACE    1: each piece of work on stderr as it runs
 *   DAP_EMU_STATS    1: at exit, the time spent per kernel and in cuBLAS */
struct settings {
    size_t mem_bytes;
    bool async, protect, reverse, trace, stats;
};
const settings &config();

/* ---- device memory ---- */
struct alloc {
    unsigned long id; /* #n in messages: the n-th cudaMalloc */
    char *map;        /* the mapping: guard page, data pages, guard page */
    size_t map_bytes;
    char *pages; /* the data pages: the data ends where they end (16-byte aligned) */
    size_t page_bytes;
    char *data; /* what cudaMalloc returned */
    size_t bytes;
    int open; /* > 0: readable and writable now (protect mode) */
};
/* The live allocation whose data [data, data + bytes] holds p (the end included: a pointer one
 * past a buffer is a valid argument), or NULL. */
alloc *find(const void *p);
/* "allocation #3 (4096 bytes), offset 128", "host memory", "NULL", "16 bytes past the end
 * of allocation #3 (...)" ... */
std::string describe(const void *p);
/* Fails (below) unless [p, p + bytes) lies inside one allocation; returns it. */
alloc *device_range(const void *p, size_t bytes, const char *what);
/* Unmaps an allocation now (cudaFree less its device synchronisation); `api` names the caller. */
void release(void *ptr, const char *api);
/* What a new allocation holds: a quiet NaN as float, as double and, each 16-bit half, as
 * bf16 and fp16 (BF16 storage reads it a half at a time); a negative int (and short). */
const unsigned int poison_bits = 0xfff8fff8u;
/* What the bytes around an allocation hold: a signalling NaN as float and, each half, as bf16,
 * whose bits any arithmetic changes (so that `x[n] += v` past the end shows too, in FP32 or
 * BF16 storage). */
const unsigned int slack_bits = 0xffb0ffb0u;

/* ---- diagnostics ---- */
/* Reports an error of the program under test (what CUDA would turn into corruption, a hang
 * or an illegal-address fault) with the API call or kernel being run and a backtrace, then
 * aborts. */
[[noreturn]] void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The API call in progress (for messages); set by api_scope. */
struct api_scope {
    const char *prev;
    explicit api_scope(const char *name);
    ~api_scope();
};
/* "PROGRAM+0x1234" for a code address (`addr2line -f -e PROGRAM 0x1234` gives its line). */
std::string code_location(const void *pc);
/* Records and returns a runtime error (cudaGetLastError returns it later). */
cudaError_t set_error(cudaError_t e, const char *fmt = nullptr, ...) __attribute__((format(printf, 2, 3)));

/* ---- streams ---- */
/* One piece of queued work. `touches`: the allocations it may read or write (opened around
 * it in protect mode, their guard bytes checked after it). */
struct work {
    std::function<void()> run;
    std::vector<alloc *> touches;
    std::string what;
};
/* Whether `s` names a live stream (0, cudaStreamLegacy and cudaStreamPerThread: the legacy
 * default stream). */
bool valid_stream(cudaStream_t s);
/* Queues w on s after what s (and, for the legacy stream, every blocking stream) holds; runs
 * it now unless DAP_EMU_ASYNC=1. */
void submit(cudaStream_t s, work w);
/* Runs everything queued on every stream. */
void drain_all();

/* ---- kernels (emu_threads.cpp) ---- */
/* Runs a grid now: every thread of every block once, on fibers. */
void run_grid(const launch_site &site, dim3 grid, dim3 block, const std::function<void()> &body);
/* For fault messages: whether a kernel is running, which, and where its running thread is. */
const launch_site *running_kernel();
/* Whether p lies in the guard page of a GPU thread's stack. */
bool in_fiber_guard(const void *p);

} // namespace emu

#endif /* DAP_CUDA_EMU_EMU_H */
