/*
 * emu_runtime.cpp (cuda-emu): the CUDA runtime on the CPU, for running the .cu files of
 * src/cuda under the tests without a GPU (`make emu`). One emulated device ("cuda-emu
 * (CPU)", compute 9.0, DAP_EMU_MEM_MB of memory).
 *
 * Device memory is the checker's main tool. Each cudaMalloc is its own mapping, a guard
 * page either side and the data against the one after it, filled with a NaN (poison_bits):
 * a kernel reading what nobody wrote gets NaN, one running past the end faults in the guard
 * page (or, for the last 15 bytes of 16-byte rounding and the page before the data,
 * changes the signalling NaN there, checked after each piece of work), and the fault
 * handler names the allocation, the kernel, its block and thread. With DAP_EMU_PROTECT
 * (default) the data pages are also inaccessible except while work that was given a
 * pointer into them runs, so host code reading device memory faults as on a real machine.
 * Every copy checks its direction against where its pointers live and its size against
 * the allocation; every launch checks its configuration and its pointer arguments.
 *
 * Streams are queues. Work (kernels, copies, memsets, cuBLAS products) is queued on its
 * stream behind what is there, the legacy default stream ordered with the blocking streams
 * as CUDA orders them, events carry (stream, position) marks. Without DAP_EMU_ASYNC each
 * queue runs as soon as work arrives: the synchronous world. With DAP_EMU_ASYNC=1 work runs
 * only when something must wait for it (a stream, event or device synchronisation, a copy
 * to the host, cudaFree), which is as late as CUDA allows: a missing wait then shows as
 * stale data (the host side of a pending download reads as NaN until it lands).
 */
#include "emu.h"

#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <set>

namespace emu {
namespace {

/* ---- settings ---------------------------------------------------------------------------- */

long env_long(const char *name, long dflt) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end = nullptr;
    long x = strtol(v, &end, 10);
    if (*end || x < 0) {
        fprintf(stderr, "cuda-emu: $%s='%s': expected a number >= 0\n", name, v);
        exit(2);
    }
    return x;
}

/* ---- state ------------------------------------------------------------------------------- */

struct stream_rec;
typedef std::pair<stream_rec *, uint64_t> mark; /* "stream s once it has run `seq` items" */

struct queued {
    work w;
    std::vector<mark> deps;
    uint64_t order; /* when it was queued, over all streams */
};

struct stream_rec {
    std::deque<queued> q;
    uint64_t submitted = 0, done = 0;
    bool blocking = true, legacy = false;
};

struct event_rec {
    stream_rec *s = nullptr;
    uint64_t seq = 0;
    unsigned flags = 0;
};

struct stat_rec {
    unsigned long count = 0;
    double seconds = 0;
};

std::map<uintptr_t, alloc *> g_allocs; /* by mapping start */
struct freed_rec {
    unsigned long id;
    uintptr_t lo, hi;
    size_t bytes;
};
std::deque<freed_rec> g_freed; /* the last frees, for use-after-free messages */
size_t g_used;
unsigned long g_next_id = 1;
size_t g_page;

stream_rec g_legacy;
std::set<stream_rec *> g_streams, g_dead_streams;
std::set<event_rec *> g_events, g_dead_events;

cudaError_t g_last_error = cudaSuccess;
thread_local const char *g_api = nullptr;
const work *g_current = nullptr;
std::map<std::string, stat_rec> g_stats;
std::atomic<int> g_busy{0};
thread_local int g_depth = 0;

void init();

size_t round_up(size_t x, size_t to) {
    return (x + to - 1) / to * to;
}

double now() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- memory ------------------------------------------------------------------------------ */

/* the byte a 32-bit pattern has at `off` from a 4-aligned start */
unsigned char pattern_byte(unsigned int bits, size_t off) {
    return ((const unsigned char *)&bits)[off % 4];
}

void fill_pattern(char *p, size_t bytes, unsigned int bits) {
    if (((uintptr_t)p & 3) == 0) {
        unsigned int *w = (unsigned int *)p;
        for (size_t i = 0; i < bytes / 4; i++) w[i] = bits;
        p += bytes & ~(size_t)3, bytes &= 3;
    }
    for (size_t i = 0; i < bytes; i++) p[i] = (char)pattern_byte(bits, i);
}

void open_alloc(alloc *a) {
    if (a->open++ == 0 && config().protect && mprotect(a->pages, a->page_bytes, PROT_READ | PROT_WRITE))
        fail("mprotect: %s", strerror(errno));
}

void close_alloc(alloc *a) {
    if (--a->open == 0 && config().protect && mprotect(a->pages, a->page_bytes, PROT_NONE))
        fail("mprotect: %s", strerror(errno));
}

/* the allocation whose mapping (guard pages included) holds p */
alloc *find_mapping(const void *p) {
    uintptr_t u = (uintptr_t)p;
    auto it = g_allocs.upper_bound(u);
    if (it == g_allocs.begin()) return nullptr;
    --it;
    alloc *a = it->second;
    return u < (uintptr_t)a->map + a->map_bytes ? a : nullptr;
}

/* After work that could reach `a`: the bytes around its data (the page before it at most)
 * must still hold slack_bits. */
void check_slack(const alloc *a, const work &w) {
    const unsigned char *pg = (const unsigned char *)a->pages;
    size_t head = (size_t)(a->data - a->pages), tail = a->bytes + head;
    for (size_t o = head > g_page ? head - g_page : 0; o < head; o++)
        if (pg[o] != pattern_byte(slack_bits, o))
            fail("%s wrote before the start of allocation #%lu (%zu bytes): its byte at offset -%zu changed",
                 w.what.c_str(), a->id, a->bytes, head - o);
    for (size_t o = tail; o < a->page_bytes; o++)
        if (pg[o] != pattern_byte(slack_bits, o))
            fail("%s wrote past the end of allocation #%lu (%zu bytes): its byte at offset %zu changed",
                 w.what.c_str(), a->id, a->bytes, o - head);
}

/* ---- streams ----------------------------------------------------------------------------- */

stream_rec *resolve(cudaStream_t s) {
    if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return &g_legacy;
    stream_rec *r = (stream_rec *)s;
    return g_streams.count(r) ? r : nullptr;
}

/* why a stream or event handle is not a live one (for messages) */
const char *stream_problem(cudaStream_t s) {
    return g_dead_streams.count((stream_rec *)s) ? "a destroyed stream"
                                                 : "not a stream from cudaStreamCreate";
}
const char *event_problem(cudaEvent_t e) {
    return g_dead_events.count((event_rec *)e) ? "a destroyed event" : "not an event from cudaEventCreate";
}

void drain(stream_rec *s, uint64_t upto);

void execute(work &w) {
    for (alloc *a : w.touches) open_alloc(a);
    const work *prev = g_current;
    g_current = &w;
    if (config().trace) fprintf(stderr, "cuda-emu: run %s\n", w.what.c_str());
    double t0 = config().stats ? now() : 0;
    w.run();
    if (config().stats) {
        std::string key = w.what.substr(0, w.what.find(" ("));
        stat_rec &st = g_stats[key];
        st.count++, st.seconds += now() - t0;
    }
    g_current = prev;
    for (alloc *a : w.touches) check_slack(a, w);
    for (alloc *a : w.touches) close_alloc(a);
}

void drain(stream_rec *s, uint64_t upto) {
    while (s->done < upto) {
        queued item = std::move(s->q.front());
        s->q.pop_front();
        for (const mark &m : item.deps) drain(m.first, m.second);
        execute(item.w);
        s->done++;
    }
}

void submit_after(stream_rec *r, work w, std::vector<mark> deps) {
    /* the legacy stream waits for the blocking streams, and they for it */
    if (r->legacy) {
        for (stream_rec *b : g_streams)
            if (b->blocking && b->submitted > b->done) deps.push_back(mark(b, b->submitted));
    } else if (r->blocking && g_legacy.submitted > g_legacy.done) {
        deps.push_back(mark(&g_legacy, g_legacy.submitted));
    }
    static uint64_t order;
    r->q.push_back(queued{std::move(w), std::move(deps), ++order});
    r->submitted++;
    if (!config().async) drain(r, r->submitted);
}

/* ---- faults ------------------------------------------------------------------------------ */

char g_altstack[1 << 16];

void on_fault(int sig, siginfo_t *si, void *) {
    const void *addr = si->si_addr;
    std::string where;
    alloc *a = find_mapping(addr);
    if (in_fiber_guard(addr)) {
        where = "the guard page of a GPU thread's stack (a stack overflow: deep recursion or a large local "
                "array)";
    } else if (a && (const char *)addr >= a->data && (const char *)addr < a->data + a->bytes) {
        where = describe(addr) + ", which this code may not touch: " +
                (running_kernel() ? "the kernel was given no pointer into that allocation"
                 : g_current      ? "that work was given no pointer into that allocation"
                                  : "host code cannot read or write device memory (copy it with cudaMemcpy)");
    } else {
        where = describe(addr);
    }
    char buf[512];
    snprintf(buf, sizeof buf, "%s at address %p: %s", sig == SIGBUS ? "bus error" : "invalid memory access",
             addr, where.c_str());
    fail("%s", buf);
}

void init() {
    static bool done;
    if (done) return;
    done = true;
    g_page = (size_t)sysconf(_SC_PAGESIZE);
    g_legacy.legacy = true;
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_sp = g_altstack, ss.ss_size = sizeof g_altstack;
    sigaltstack(&ss, nullptr);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
    if (config().stats)
        atexit([] {
            std::vector<std::pair<std::string, stat_rec>> v(g_stats.begin(), g_stats.end());
            std::sort(v.begin(), v.end(),
                      [](const auto &x, const auto &y) { return x.second.seconds > y.second.seconds; });
            fprintf(stderr, "cuda-emu: time by kernel / call (DAP_EMU_STATS)\n");
            for (const auto &e : v)
                fprintf(stderr, "  %9.3f s %9lu x  %s\n", e.second.seconds, e.second.count, e.first.c_str());
        });
}

const char *kind_name(cudaMemcpyKind k) {
    switch (k) {
    case cudaMemcpyHostToHost:
        return "HostToHost";
    case cudaMemcpyHostToDevice:
        return "HostToDevice";
    case cudaMemcpyDeviceToHost:
        return "DeviceToHost";
    case cudaMemcpyDeviceToDevice:
        return "DeviceToDevice";
    default:
        return "Default";
    }
}

/* Where a pointer handed to a copy or memset lives; fails for one that is in no allocation's
 * data but inside its guard or slack (an offset gone wrong), or NULL. */
alloc *locate(const void *p, const char *role) {
    if (!p) fail("the %s is NULL", role);
    alloc *a = find(p);
    if (!a && find_mapping(p)) fail("the %s is %s", role, describe(p).c_str());
    return a;
}

/* The copies and memsets. `sync_api`: cudaMemcpy / cudaMemset (the legacy stream, with their
 * documented host synchronisation) rather than the Async forms. */
cudaError_t copy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s,
                 bool sync_api) {
    init();
    if ((unsigned)kind > cudaMemcpyDefault) return set_error(cudaErrorInvalidMemcpyDirection);
    if (!valid_stream(s))
        return set_error(cudaErrorInvalidResourceHandle, "stream %p: %s", (void *)s, stream_problem(s));
    if (bytes == 0) return cudaSuccess;
    alloc *da = locate(dst, "destination"), *sa = locate(src, "source");
    cudaMemcpyKind actual = sa ? (da ? cudaMemcpyDeviceToDevice : cudaMemcpyDeviceToHost)
                               : (da ? cudaMemcpyHostToDevice : cudaMemcpyHostToHost);
    if (kind != cudaMemcpyDefault && kind != actual)
        fail("a %s copy from %s to %s (the pointers make it %s)", kind_name(kind), describe(src).c_str(),
             describe(dst).c_str(), kind_name(actual));
    if (da) device_range(dst, bytes, "the copy's destination");
    if (sa) device_range(src, bytes, "the copy's source");
    if ((const char *)dst < (const char *)src + bytes && (const char *)src < (const char *)dst + bytes)
        fail("a copy of %zu bytes between overlapping ranges (%p and %p)", bytes, dst, src);
    stream_rec *r = sync_api ? &g_legacy : resolve(s);
    char what[160];
    snprintf(what, sizeof what, "cudaMemcpy%s (%s, %zu bytes)", sync_api ? "" : "Async", kind_name(actual),
             bytes);
    work w;
    w.what = what;
    switch (actual) {
    case cudaMemcpyHostToDevice: {
        /* pageable memory is staged before the call returns: the host may reuse it at once (a
         * copy that runs at once needs no staging) */
        if (sync_api) drain(&g_legacy, g_legacy.submitted); /* "a stream sync before the copy" */
        if (config().async) {
            auto staged = std::make_shared<std::vector<char>>((const char *)src, (const char *)src + bytes);
            w.run = [dst, staged]() { memcpy(dst, staged->data(), staged->size()); };
        } else {
            w.run = [dst, src, bytes]() { memcpy(dst, src, bytes); };
        }
        w.touches = {da};
        submit_after(r, std::move(w), {}); /* lands when the stream gets there */
        break;
    }
    case cudaMemcpyDeviceToHost:
        if (config().async) fill_pattern((char *)dst, bytes, poison_bits); /* undefined until it lands */
        w.run = [dst, src, bytes]() { memcpy(dst, src, bytes); };
        w.touches = {sa};
        submit_after(r, std::move(w), {});
        if (sync_api) drain(r, r->submitted); /* returns once the copy is done */
        break;
    case cudaMemcpyDeviceToDevice: /* no host synchronisation, either form */
        w.run = [dst, src, bytes]() { memcpy(dst, src, bytes); };
        w.touches = {da, sa};
        submit_after(r, std::move(w), {});
        break;
    default: /* host to host: done by the host at once, ordered after nothing on the device */
        memcpy(dst, src, bytes);
        break;
    }
    return cudaSuccess;
}

cudaError_t fill(void *dst, int value, size_t bytes, cudaStream_t s, bool sync_api) {
    init();
    if (!valid_stream(s))
        return set_error(cudaErrorInvalidResourceHandle, "stream %p: %s", (void *)s, stream_problem(s));
    if (bytes == 0) return cudaSuccess;
    alloc *a = locate(dst, "memset's destination");
    if (!a) fail("cudaMemset%s on host memory (%p)", sync_api ? "" : "Async", dst);
    device_range(dst, bytes, "the memset's range");
    char what[96];
    snprintf(what, sizeof what, "cudaMemset%s (%zu bytes)", sync_api ? "" : "Async", bytes);
    work w;
    w.what = what;
    w.run = [dst, value, bytes]() { memset(dst, value, bytes); };
    w.touches = {a};
    submit_after(sync_api ? &g_legacy : resolve(s), std::move(w), {}); /* asynchronous to the host */
    return cudaSuccess;
}

} // namespace

/* ---- the shared interface (emu.h) ---------------------------------------------------------- */

const settings &config() {
    static settings s = [] {
        settings c;
        c.mem_bytes = (size_t)env_long("DAP_EMU_MEM_MB", 16384) << 20;
        c.async = env_long("DAP_EMU_ASYNC", 0) != 0;
        c.protect = env_long("DAP_EMU_PROTECT", 1) != 0;
        c.reverse = env_long("DAP_EMU_REVERSE", 0) != 0;
        c.trace = env_long("DAP_EMU_TRACE", 0) != 0;
        c.stats = env_long("DAP_EMU_STATS", 0) != 0;
        return c;
    }();
    return s;
}

alloc *find(const void *p) {
    alloc *a = find_mapping(p);
    return a && (const char *)p >= a->data && (const char *)p <= a->data + a->bytes ? a : nullptr;
}

std::string describe(const void *p) {
    char buf[256];
    if (!p) return "NULL";
    const char *c = (const char *)p;
    alloc *a = find_mapping(p);
    if (a) {
        const long long off = (long long)(c - a->data);
        snprintf(buf, sizeof buf, "allocation #%lu (%zu bytes) at offset %lld%s", a->id, a->bytes, off,
                 off < 0                      ? ", before its start"
                 : off >= (long long)a->bytes ? ", past its end"
                                              : "");
    } else {
        for (const freed_rec &f : g_freed)
            if ((uintptr_t)p >= f.lo && (uintptr_t)p < f.hi) {
                snprintf(buf, sizeof buf, "%p, inside allocation #%lu (%zu bytes), already freed", p, f.id,
                         f.bytes);
                return buf;
            }
        snprintf(buf, sizeof buf, "%p (host memory, or no allocation)", p);
    }
    return buf;
}

alloc *device_range(const void *p, size_t bytes, const char *what) {
    alloc *a = find(p);
    if (!a) fail("%s (%p, %zu bytes) is not device memory: %s", what, p, bytes, describe(p).c_str());
    if ((size_t)((const char *)p - a->data) + bytes > a->bytes)
        fail("%s runs %zu bytes past the end of allocation #%lu (%zu bytes): it starts at offset %zu and is "
             "%zu bytes",
             what, (size_t)((const char *)p - a->data) + bytes - a->bytes, a->id, a->bytes,
             (size_t)((const char *)p - a->data), bytes);
    return a;
}

void fail(const char *fmt, ...) {
    static bool failing;
    if (failing) abort();
    failing = true;
    fflush(stdout);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\ncuda-emu: ERROR: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    if (const launch_site *k = running_kernel())
        fprintf(
            stderr,
            "  in kernel %s launched at %s:%d, block (%u, %u, %u) of (%u, %u, %u), thread (%u, %u, %u) of "
            "(%u, %u, %u)\n",
            k->kernel, k->file, k->line, blockIdx.x, blockIdx.y, blockIdx.z, gridDim.x, gridDim.y, gridDim.z,
            threadIdx.x, threadIdx.y, threadIdx.z, blockDim.x, blockDim.y, blockDim.z);
    else if (g_current)
        fprintf(stderr, "  while running %s\n", g_current->what.c_str());
    if (g_api) fprintf(stderr, "  in the call %s\n", g_api);
    fprintf(stderr, "  host backtrace (a line: addr2line -f -C -e %s +0x... offset):\n",
            program_invocation_name);
    void *frames[48];
    int n = backtrace(frames, 48);
    backtrace_symbols_fd(frames, n, 2);
    abort();
}

api_scope::api_scope(const char *name) : prev(g_api) {
    if (g_depth++ == 0) {
        int expect = 0;
        if (!g_busy.compare_exchange_strong(expect, 1))
            fail("%s called while another host thread is in the CUDA runtime (one caller at a time)", name);
    }
    g_api = name;
    init();
}

api_scope::~api_scope() {
    g_api = prev;
    if (--g_depth == 0) g_busy = 0;
}

cudaError_t set_error(cudaError_t e, const char *fmt, ...) {
    g_last_error = e;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "cuda-emu: %s returns %s: ", g_api ? g_api : "a call", cudaGetErrorName(e));
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
    }
    return e;
}

std::string code_location(const void *pc) {
    Dl_info info;
    char buf[512];
    if (dladdr(pc, &info) && info.dli_fname)
        snprintf(buf, sizeof buf, "%s+0x%zx", info.dli_fname,
                 (size_t)((const char *)pc - (const char *)info.dli_fbase));
    else
        snprintf(buf, sizeof buf, "%p", pc);
    return buf;
}

bool valid_stream(cudaStream_t s) {
    return resolve(s) != nullptr;
}

void submit(cudaStream_t s, work w) {
    stream_rec *r = resolve(s);
    if (!r) fail("work queued on stream %p: %s", (void *)s, stream_problem(s));
    submit_after(r, std::move(w), {});
}

void drain_all() {
    /* the most recently queued first wherever the streams allow it: work that was not made to
     * wait for other work then overtakes it, as it may on a GPU */
    for (;;) {
        stream_rec *pick = g_legacy.q.empty() ? nullptr : &g_legacy;
        for (stream_rec *s : g_streams)
            if (!s->q.empty() && (!pick || s->q.front().order > pick->q.front().order)) pick = s;
        if (!pick) return;
        drain(pick, pick->done + 1);
    }
}

void launch(const launch_site &site, dim3 grid, dim3 block, size_t shmem, cudaStream_t stream,
            std::function<void()> body, const launch_args &args) {
    api_scope api("a kernel launch");
    char what[384];
    snprintf(what, sizeof what, "kernel %s (%s:%d), grid (%u, %u, %u), block (%u, %u, %u)", site.kernel,
             site.file, site.line, grid.x, grid.y, grid.z, block.x, block.y, block.z);
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 ||
        grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535 ||
        shmem > 48 * 1024) {
        set_error(cudaErrorInvalidConfiguration, "%s: an invalid launch configuration (not run)", what);
        return;
    }
    if (!valid_stream(stream)) {
        set_error(cudaErrorInvalidResourceHandle, "%s: stream %p: %s", what, (void *)stream,
                  stream_problem(stream));
        return;
    }
    work w;
    w.what = what;
    for (int i = 0; i < args.n_ptrs; i++) {
        const void *p = args.ptrs[i];
        if (p && !find(p))
            fail("kernel %s launched at %s:%d: argument %d is %s, not device memory", site.kernel, site.file,
                 site.line, args.ptr_index[i] + 1, describe(p).c_str());
    }
    for (size_t i = 0; i < args.n_words; i++)
        if (alloc *a = find(args.words[i]))
            if (std::find(w.touches.begin(), w.touches.end(), a) == w.touches.end()) w.touches.push_back(a);
    launch_site s = site;
    w.run = [s, grid, block, body]() { run_grid(s, grid, block, body); };
    submit(stream, std::move(w));
}

} // namespace emu

using namespace emu;

/* ---- device ------------------------------------------------------------------------------ */

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

cudaError_t cudaGetDeviceCount(int *count) {
    api_scope api("cudaGetDeviceCount");
    if (!count) return set_error(cudaErrorInvalidValue);
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    api_scope api("cudaSetDevice");
    return device == 0 ? cudaSuccess
                       : set_error(cudaErrorInvalidDevice, "device %d (the emulator has one)", device);
}

cudaError_t cudaGetDevice(int *device) {
    api_scope api("cudaGetDevice");
    if (!device) return set_error(cudaErrorInvalidValue);
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
    api_scope api("cudaGetDeviceProperties");
    if (!p) return set_error(cudaErrorInvalidValue);
    if (device != 0) return set_error(cudaErrorInvalidDevice, "device %d (the emulator has one)", device);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuda-emu (CPU)");
    p->totalGlobalMem = config().mem_bytes;
    p->sharedMemPerBlock = 48 * 1024;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = 1024, p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff, p->maxGridSize[1] = 65535, p->maxGridSize[2] = 65535;
    p->major = 9, p->minor = 0;
    p->multiProcessorCount = 1;
    p->clockRate = 1000000;
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    api_scope api("cudaMemGetInfo");
    if (!free_bytes || !total_bytes) return set_error(cudaErrorInvalidValue);
    *total_bytes = config().mem_bytes;
    *free_bytes = config().mem_bytes > g_used ? config().mem_bytes - g_used : 0;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    api_scope api("cudaDeviceSynchronize");
    drain_all();
    return cudaSuccess;
}

cudaError_t cudaDeviceReset(void) {
    api_scope api("cudaDeviceReset");
    drain_all();
    return cudaSuccess;
}

/* ---- memory ------------------------------------------------------------------------------ */

cudaError_t cudaMalloc(void **ptr, size_t bytes) {
    api_scope api("cudaMalloc");
    if (!ptr) return set_error(cudaErrorInvalidValue);
    *ptr = nullptr;
    if (bytes == 0) return cudaSuccess;
    size_t span = round_up(bytes, 256);
    if (bytes > config().mem_bytes || g_used + span > config().mem_bytes)
        return set_error(cudaErrorMemoryAllocation, "%zu bytes asked, %zu of %zu free (DAP_EMU_MEM_MB)",
                         bytes, config().mem_bytes - g_used, config().mem_bytes);
    /* the data ends against the guard page after it: 16-byte aligned (CUDA gives 256, which
     * would leave up to 255 unguarded bytes); large ones in whole 2 MiB pages (mprotect on
     * them is then cheap) */
    const size_t tight = round_up(bytes, 16), huge = (size_t)2 << 20;
    const size_t unit = tight >= 2 * huge ? huge : g_page, pages = round_up(tight, unit);
    const size_t total = pages + 2 * g_page + (unit > g_page ? unit : 0);
    char *map = (char *)mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED)
        return set_error(cudaErrorMemoryAllocation, "mmap of %zu bytes: %s", total, strerror(errno));
    alloc *a = new alloc;
    a->id = g_next_id++;
    a->map = map, a->map_bytes = total;
    a->pages = (char *)round_up((uintptr_t)map + g_page, unit), a->page_bytes = pages;
    a->data = a->pages + pages - tight, a->bytes = bytes;
    a->open = 0;
    if (mprotect(a->pages, pages, PROT_READ | PROT_WRITE)) fail("mprotect: %s", strerror(errno));
    if (unit > g_page) madvise(a->pages, pages, MADV_HUGEPAGE);
    fill_pattern(a->pages, (size_t)(a->data - a->pages), slack_bits);
    fill_pattern(a->data, bytes, poison_bits);
    for (size_t o = (size_t)(a->data - a->pages) + bytes; o < pages; o++)
        a->pages[o] = (char)pattern_byte(slack_bits, o);
    if (config().protect && mprotect(a->pages, pages, PROT_NONE)) fail("mprotect: %s", strerror(errno));
    g_allocs[(uintptr_t)map] = a;
    g_used += span;
    *ptr = a->data;
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr) {
    api_scope api("cudaFree");
    if (!ptr) return cudaSuccess;
    drain_all(); /* cudaFree waits for the device */
    release(ptr, "cudaFree");
    return cudaSuccess;
}

namespace emu {
void release(void *ptr, const char *api) {
    alloc *a = find(ptr);
    if (!a || a->data != ptr)
        fail("%s(%p): not the start of a live allocation: %s", api, ptr, describe(ptr).c_str());
    g_allocs.erase((uintptr_t)a->map);
    g_freed.push_back(freed_rec{a->id, (uintptr_t)a->map, (uintptr_t)a->map + a->map_bytes, a->bytes});
    if (g_freed.size() > 4096) g_freed.pop_front();
    g_used -= round_up(a->bytes, 256);
    munmap(a->map, a->map_bytes);
    delete a;
}
} // namespace emu

cudaError_t cudaMallocAsync(void **ptr, size_t bytes, cudaStream_t stream) {
    api_scope api("cudaMallocAsync");
    if (!valid_stream(stream)) return set_error(cudaErrorInvalidResourceHandle);
    return cudaMalloc(ptr, bytes);
}

cudaError_t cudaFreeAsync(void *ptr, cudaStream_t stream) {
    api_scope api("cudaFreeAsync");
    if (!valid_stream(stream)) return set_error(cudaErrorInvalidResourceHandle);
    if (!ptr) return cudaSuccess;
    alloc *a = find(ptr);
    if (!a || a->data != ptr)
        fail("cudaFreeAsync(%p): not the start of a live allocation: %s", ptr, describe(ptr).c_str());
    work w;
    w.what = "cudaFreeAsync";
    w.run = [ptr]() { release(ptr, "cudaFreeAsync"); };
    submit(stream, std::move(w));
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    api_scope api("cudaMemcpy");
    return copy(dst, src, bytes, kind, nullptr, true);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
    api_scope api("cudaMemcpyAsync");
    return copy(dst, src, bytes, kind, stream, false);
}

cudaError_t cudaMemset(void *dst, int value, size_t bytes) {
    api_scope api("cudaMemset");
    return fill(dst, value, bytes, nullptr, true);
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream) {
    api_scope api("cudaMemsetAsync");
    return fill(dst, value, bytes, stream, false);
}

/* ---- streams and events ------------------------------------------------------------------ */

cudaError_t cudaStreamCreate(cudaStream_t *stream) {
    return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags) {
    api_scope api("cudaStreamCreateWithFlags");
    if (!stream || flags > cudaStreamNonBlocking) return set_error(cudaErrorInvalidValue);
    stream_rec *r = new stream_rec;
    r->blocking = !(flags & cudaStreamNonBlocking);
    g_streams.insert(r);
    *stream = (cudaStream_t)r;
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    api_scope api("cudaStreamDestroy");
    stream_rec *r = resolve(stream);
    if (!r || r->legacy)
        fail("cudaStreamDestroy(%p): %s", (void *)stream,
             r ? "the legacy default stream" : stream_problem(stream));
    drain(r, r->submitted); /* its work still completes */
    g_streams.erase(r);
    g_dead_streams.insert(r); /* kept: marks and later misuse may name it */
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    api_scope api("cudaStreamSynchronize");
    stream_rec *r = resolve(stream);
    if (!r)
        return set_error(cudaErrorInvalidResourceHandle, "stream %p: %s", (void *)stream,
                         stream_problem(stream));
    drain(r, r->submitted);
    return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
    api_scope api("cudaStreamQuery");
    stream_rec *r = resolve(stream);
    if (!r)
        return set_error(cudaErrorInvalidResourceHandle, "stream %p: %s", (void *)stream,
                         stream_problem(stream));
    return r->done == r->submitted ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
    api_scope api("cudaStreamWaitEvent");
    stream_rec *r = resolve(stream);
    event_rec *e = (event_rec *)event;
    if (!r)
        return set_error(cudaErrorInvalidResourceHandle, "stream %p: %s", (void *)stream,
                         stream_problem(stream));
    if (!g_events.count(e))
        return set_error(cudaErrorInvalidResourceHandle, "event %p: %s", (void *)event, event_problem(event));
    if (flags) return set_error(cudaErrorInvalidValue, "flags %u", flags);
    if (!e->s) return cudaSuccess; /* never recorded: nothing to wait for */
    work w;
    w.what = "cudaStreamWaitEvent";
    w.run = [] {};
    submit_after(r, std::move(w), {mark(e->s, e->seq)});
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *event) {
    return cudaEventCreateWithFlags(event, cudaEventDefault);
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags) {
    api_scope api("cudaEventCreateWithFlags");
    if (!event || flags > (cudaEventBlockingSync | cudaEventDisableTiming))
        return set_error(cudaErrorInvalidValue);
    event_rec *e = new event_rec;
    e->flags = flags;
    g_events.insert(e);
    *event = (cudaEvent_t)e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    api_scope api("cudaEventRecord");
    event_rec *e = (event_rec *)event;
    stream_rec *r = resolve(stream);
    if (!g_events.count(e))
        return set_error(cudaErrorInvalidResourceHandle, "event %p: %s", (void *)event, event_problem(event));
    if (!r)
        return set_error(cudaErrorInvalidResourceHandle, "stream %p: %s", (void *)stream,
                         stream_problem(stream));
    e->s = r, e->seq = r->submitted;
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    api_scope api("cudaEventSynchronize");
    event_rec *e = (event_rec *)event;
    if (!g_events.count(e))
        return set_error(cudaErrorInvalidResourceHandle, "event %p: %s", (void *)event, event_problem(event));
    if (e->s) drain(e->s, e->seq);
    return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
    api_scope api("cudaEventQuery");
    event_rec *e = (event_rec *)event;
    if (!g_events.count(e))
        return set_error(cudaErrorInvalidResourceHandle, "event %p: %s", (void *)event, event_problem(event));
    return !e->s || e->s->done >= e->seq ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    api_scope api("cudaEventElapsedTime");
    event_rec *a = (event_rec *)start, *b = (event_rec *)end;
    if (!ms) return set_error(cudaErrorInvalidValue);
    if (!g_events.count(a) || !g_events.count(b))
        return set_error(cudaErrorInvalidResourceHandle, "event %p: %s",
                         (void *)(g_events.count(a) ? end : start),
                         event_problem(g_events.count(a) ? end : start));
    if ((a->flags | b->flags) & cudaEventDisableTiming)
        return set_error(cudaErrorInvalidResourceHandle, "an event made with cudaEventDisableTiming");
    *ms = 0.0f; /* no clock on the emulated device */
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    api_scope api("cudaEventDestroy");
    event_rec *e = (event_rec *)event;
    if (!g_events.count(e)) fail("cudaEventDestroy(%p): %s", (void *)event, event_problem(event));
    g_events.erase(e);
    g_dead_events.insert(e);
    return cudaSuccess;
}

/* ---- errors ------------------------------------------------------------------------------ */

cudaError_t cudaGetLastError(void) {
    cudaError_t e = g_last_error;
    g_last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) {
    return g_last_error;
}

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess:
        return "cudaSuccess";
    case cudaErrorInvalidValue:
        return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
        return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
        return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer:
        return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection:
        return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInvalidResourceHandle:
        return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady:
        return "cudaErrorNotReady";
    case cudaErrorInvalidDevice:
        return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice:
        return "cudaErrorNoDevice";
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess:
        return "no error";
    case cudaErrorInvalidValue:
        return "invalid argument";
    case cudaErrorMemoryAllocation:
        return "out of memory";
    case cudaErrorInvalidConfiguration:
        return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer:
        return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection:
        return "invalid copy direction for memcpy";
    case cudaErrorInvalidResourceHandle:
        return "invalid resource handle";
    case cudaErrorNotReady:
        return "device not ready";
    case cudaErrorInvalidDevice:
        return "invalid device ordinal";
    case cudaErrorNoDevice:
        return "no CUDA-capable device is detected";
    }
    return "unknown error";
}
