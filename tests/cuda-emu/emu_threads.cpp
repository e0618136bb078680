/*
 * emu_threads.cpp (cuda-emu): a grid's GPU threads on the CPU, one block after another.
 *
 * Each GPU thread of a block runs on a fiber (a stack of its own), so that it can stop in
 * the middle of the kernel: at __syncthreads until every thread of the block is there, at a
 * warp shuffle until the lanes of its mask are there to exchange values. A fiber runs
 * threads one after another until one of them stops, so a kernel without barriers or
 * shuffles costs a function call per thread. Fibers are made once and reused for every
 * grid; on x86-64 they switch with a few instructions (switch_stack below: the registers
 * the ABI keeps across calls, and the stack pointer), elsewhere with swapcontext.
 *
 * What a GPU would leave undefined is an error here, reported with the kernel, block and
 * thread: a barrier that some threads of the block never reach (they exited, or wait at
 * another __syncthreads or a shuffle), __syncthreads called from two places of the code
 * (divergent barriers), a shuffle whose mask names a lane that exited or is not in the warp,
 * a lane reading from a lane outside the mask, lanes of one mask in different intrinsics.
 * DAP_EMU_REVERSE=1 runs the blocks and the threads of each block in the other order.
 */
#include "emu.h"

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace {

const size_t STACK_BYTES = (size_t)256 << 10;

void runner();

/* ---- fibers ------------------------------------------------------------------------------ */

#if defined(__x86_64__)
/* emu_switch_stack(&save, to): pushes the registers the ABI keeps across calls, stores the
 * stack pointer in *save, then pops them from the stack `to` (as an earlier switch left it, or
 * as make_context lays out a new one) and returns there. MXCSR and the x87 control word, also
 * kept across calls, are left alone: nothing here changes the rounding or exception modes. */
extern "C" void emu_switch_stack(void **save, void *to);
asm(R"(
    .text
    .p2align 4
    .type emu_switch_stack, @function
emu_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch_stack, .-emu_switch_stack
)");

struct context {
    void *sp;
};

/* A new stack whose first switch "returns" into runner(), as if called (the stack 16-byte
 * aligned at the call), with a null return address above it. */
void make_context(context *c, char *stack, size_t bytes) {
    uintptr_t top = ((uintptr_t)stack + bytes) & ~(uintptr_t)15;
    void **s = (void **)(top - 16);
    s[0] = (void *)runner, s[1] = nullptr;
    s -= 6; /* r15 r14 r13 r12 rbx rbp */
    memset(s, 0, 6 * sizeof *s);
    c->sp = s;
}

inline void switch_context(context *from, context *to) {
    emu_switch_stack(&from->sp, to->sp);
}
#else
struct context {
    ucontext_t uc;
};

void make_context(context *c, char *stack, size_t bytes) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack, c->uc.uc_stack.ss_size = bytes, c->uc.uc_link = nullptr;
    makecontext(&c->uc, runner, 0);
}

inline void switch_context(context *from, context *to) {
    swapcontext(&from->uc, &to->uc);
}
#endif

struct fiber {
    context ctx;
    char *map; /* a guard page, then the stack */
    size_t map_bytes;
};

/* ---- the block --------------------------------------------------------------------------- */

enum tstate : unsigned char { T_NEW, T_RUN, T_READY, T_BARRIER, T_WARP, T_DONE };

struct warp_req {
    emu::warp_kind kind;
    unsigned mask;
    uint64_t bits;
    int bytes, arg, width;
    uint64_t result;
};

struct thread_rec {
    tstate st;
    fiber *f;
    warp_req w;
    void *pc; /* where it called __syncthreads */
};

/* the block being run */
struct block_state {
    const std::function<void()> *body;
    const emu::launch_site *site;
    dim3 bdim;
    unsigned n, next, done, at_barrier, at_warp;
    std::vector<thread_rec> t;
    std::vector<unsigned> waiting_warps; /* warps with a lane in a collective */
    std::vector<unsigned> ready;         /* threads to resume, in order */
} B;

bool g_running;
context g_sched;
fiber *g_cur;
unsigned g_thread;  /* the running thread's linear index */
bool g_idle_return; /* the fiber came back with no thread on it */
std::vector<fiber *> g_fibers, g_idle;
size_t g_page;

const char *kind_name(emu::warp_kind k) {
    static const char *names[] = {"__shfl_sync",   "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
                                  "__ballot_sync", "__any_sync",     "__all_sync",       "__syncwarp"};
    return names[k];
}

void set_thread(unsigned t) {
    g_thread = t;
    if (B.bdim.y == 1 && B.bdim.z == 1) {
        threadIdx.x = t, threadIdx.y = threadIdx.z = 0;
        return;
    }
    threadIdx.x = t % B.bdim.x;
    threadIdx.y = t / B.bdim.x % B.bdim.y;
    threadIdx.z = t / (B.bdim.x * B.bdim.y);
}

/* back to the scheduler; returns when the scheduler resumes this fiber */
void leave(fiber *f) {
    switch_context(&f->ctx, &g_sched);
}

void runner() {
    fiber *self = g_cur;
    for (;;) {
        while (B.next < B.n) {
            unsigned t = B.next++;
            if (emu::config().reverse) t = B.n - 1 - t;
            set_thread(t);
            B.t[t].st = T_RUN, B.t[t].f = self;
            (*B.body)();
            B.t[t].st = T_DONE;
            B.done++;
        }
        g_idle_return = true;
        leave(self);
    }
}

fiber *get_fiber() {
    if (!g_idle.empty()) {
        fiber *f = g_idle.back();
        g_idle.pop_back();
        return f;
    }
    if (!g_page) g_page = (size_t)sysconf(_SC_PAGESIZE);
    fiber *f = new fiber();
    f->map_bytes = STACK_BYTES + g_page;
    f->map = (char *)mmap(nullptr, f->map_bytes, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (f->map == MAP_FAILED || mprotect(f->map, g_page, PROT_NONE))
        emu::fail("cannot map a GPU thread's stack");
    make_context(&f->ctx, f->map + g_page, STACK_BYTES);
    g_fibers.push_back(f);
    return f;
}

/* runs f until the thread on it stops, or until it runs out of threads to start */
void run_on(fiber *f) {
    g_cur = f;
    g_idle_return = false;
    switch_context(&g_sched, &f->ctx);
    if (g_idle_return) g_idle.push_back(f);
}

/* Fails naming thread t as the one at fault (the message's thread). */
#define FAIL_AT(t, ...)                                                                                      \
    do {                                                                                                     \
        set_thread(t);                                                                                       \
        emu::fail(__VA_ARGS__);                                                                              \
    } while (0)

/* The collectives of warp w whose lanes have all arrived: results computed, lanes made ready.
 * Returns whether a lane is left waiting. */
bool resolve_warp(unsigned w) {
    const unsigned base = w * 32, nl = B.n - base < 32 ? B.n - base : 32;
    bool left = false;
    for (unsigned lane = 0; lane < nl; lane++) {
        thread_rec &r = B.t[base + lane];
        if (r.st != T_WARP) continue;
        const unsigned m = r.w.mask;
        if (!(m >> lane & 1))
            FAIL_AT(base + lane, "%s with mask 0x%08x, which leaves out the calling lane %u",
                    kind_name(r.w.kind), m, lane);
        bool ready = true;
        for (unsigned l = 0; l < 32 && ready; l++) {
            if (!(m >> l & 1)) continue;
            if (l >= nl)
                FAIL_AT(base + lane, "%s with mask 0x%08x names lane %u, but this warp has %u threads",
                        kind_name(r.w.kind), m, l, nl);
            const thread_rec &o = B.t[base + l];
            if (o.st == T_DONE)
                FAIL_AT(base + lane, "%s with mask 0x%08x waits for lane %u, which has exited",
                        kind_name(r.w.kind), m, l);
            if (o.st != T_WARP || o.w.mask != m)
                ready = false;
            else if (o.w.kind != r.w.kind)
                FAIL_AT(base + lane,
                        "lanes %u and %u of one mask (0x%08x) meet in different intrinsics: %s and %s", lane,
                        l, m, kind_name(r.w.kind), kind_name(o.w.kind));
        }
        if (!ready) {
            left = true;
            continue;
        }
        unsigned ballot = 0;
        for (unsigned l = 0; l < 32; l++)
            if (m >> l & 1 && B.t[base + l].w.bits != 0) ballot |= 1u << l;
        for (unsigned l = 0; l < 32; l++) {
            if (!(m >> l & 1)) continue;
            warp_req &q = B.t[base + l].w;
            const unsigned wd = (unsigned)q.width, group = l & ~(wd - 1);
            unsigned src = l;
            switch (q.kind) {
            case emu::WARP_SHFL_IDX:
                src = group + ((unsigned)q.arg & (wd - 1));
                break;
            case emu::WARP_SHFL_UP:
                src = (l & (wd - 1)) >= (unsigned)q.arg ? l - (unsigned)q.arg : l;
                break;
            case emu::WARP_SHFL_DOWN:
                src = (l & (wd - 1)) + (unsigned)q.arg < wd ? l + (unsigned)q.arg : l;
                break;
            case emu::WARP_SHFL_XOR:
                src = l ^ (unsigned)q.arg;
                if ((src & ~(wd - 1)) > group) src = l; /* a later group: its own value */
                break;
            case emu::WARP_BALLOT:
                q.result = ballot;
                continue;
            case emu::WARP_ANY:
                q.result = ballot != 0;
                continue;
            case emu::WARP_ALL:
                q.result = ballot == m;
                continue;
            case emu::WARP_SYNC:
                q.result = 0;
                continue;
            }
            if (src >= 32 || !(m >> src & 1))
                FAIL_AT(base + l,
                        "%s: lane %u reads lane %u, which is not in the mask 0x%08x (undefined on a GPU)",
                        kind_name(q.kind), l, src, m);
            q.result = B.t[base + src].w.bits;
        }
        for (unsigned l = 0; l < 32; l++)
            if (m >> l & 1) B.t[base + l].st = T_READY, B.ready.push_back(base + l);
        B.at_warp -= (unsigned)__builtin_popcount(m);
    }
    return left;
}

/* Every thread has started and stopped: release what can go on, or report why nothing can. */
void resolve() {
    if (B.at_warp) {
        std::sort(B.waiting_warps.begin(), B.waiting_warps.end());
        B.waiting_warps.erase(std::unique(B.waiting_warps.begin(), B.waiting_warps.end()),
                              B.waiting_warps.end());
        std::vector<unsigned> still;
        for (unsigned w : B.waiting_warps)
            if (resolve_warp(w)) still.push_back(w);
        B.waiting_warps.swap(still);
        if (!B.ready.empty()) return;
    }
    if (B.at_barrier && !B.at_warp && !(B.done > 0)) {
        for (unsigned t = 0; t < B.n; t++) {
            if (B.t[t].pc != B.t[0].pc)
                FAIL_AT(t,
                        "__syncthreads reached from two places: this thread's at %s, thread 0's at %s (a "
                        "barrier in divergent code)",
                        emu::code_location(B.t[t].pc).c_str(), emu::code_location(B.t[0].pc).c_str());
            B.t[t].st = T_READY, B.ready.push_back(t);
        }
        B.at_barrier = 0;
        return;
    }
    unsigned first_at = 0, first_done = 0, first_warp = 0;
    for (unsigned t = B.n; t-- > 0;) {
        if (B.t[t].st == T_BARRIER) first_at = t;
        if (B.t[t].st == T_DONE) first_done = t;
        if (B.t[t].st == T_WARP) first_warp = t;
    }
    if (B.at_barrier && !B.at_warp)
        FAIL_AT(first_at,
                "__syncthreads waits for thread %u of the block, which has exited (%u of %u threads "
                "exited; a barrier every thread must reach)",
                first_done, B.done, B.n);
    if (B.at_barrier)
        FAIL_AT(first_at,
                "__syncthreads waits while thread %u (lane %u) waits in %s with mask 0x%08x: the block "
                "cannot go on",
                first_warp, first_warp % 32, kind_name(B.t[first_warp].w.kind), B.t[first_warp].w.mask);
    FAIL_AT(first_warp, "%s with mask 0x%08x can never complete (a lane of the mask waits elsewhere)",
            kind_name(B.t[first_warp].w.kind), B.t[first_warp].w.mask);
}

void run_block() {
    B.next = B.done = B.at_barrier = B.at_warp = 0;
    B.waiting_warps.clear();
    B.ready.clear();
    for (unsigned t = 0; t < B.n; t++) B.t[t].st = T_NEW;
    while (B.next < B.n) run_on(get_fiber());
    while (B.done < B.n) {
        resolve();
        std::vector<unsigned> now;
        now.swap(B.ready);
        if (emu::config().reverse) std::reverse(now.begin(), now.end());
        for (unsigned t : now) {
            B.t[t].st = T_RUN;
            set_thread(t);
            run_on(B.t[t].f);
        }
        B.ready.swap(now); /* keeps the capacity */
        B.ready.clear();
    }
}

thread_rec &self_for(const char *what) {
    if (!g_running) emu::fail("%s called outside a kernel", what);
    return B.t[g_thread];
}

} // namespace

namespace emu {

void run_grid(const launch_site &site, dim3 grid, dim3 block, const std::function<void()> &body) {
    if (g_running) fail("kernel %s launched while kernel %s runs", site.kernel, B.site->kernel);
    g_running = true;
    B.body = &body, B.site = &site, B.bdim = block;
    B.n = block.x * block.y * block.z;
    B.t.assign(B.n, thread_rec());
    blockDim = block, gridDim = grid;
    const unsigned long long blocks = (unsigned long long)grid.x * grid.y * grid.z;
    for (unsigned long long i = 0; i < blocks; i++) {
        const unsigned long long b = config().reverse ? blocks - 1 - i : i;
        blockIdx.x = (unsigned)(b % grid.x), blockIdx.y = (unsigned)(b / grid.x % grid.y);
        blockIdx.z = (unsigned)(b / ((unsigned long long)grid.x * grid.y));
        run_block();
    }
    g_running = false;
}

const launch_site *running_kernel() {
    return g_running ? B.site : nullptr;
}

bool in_fiber_guard(const void *p) {
    for (const fiber *f : g_fibers)
        if ((const char *)p >= f->map && (const char *)p < f->map + g_page) return true;
    return false;
}

uint64_t warp_op(warp_kind kind, unsigned int mask, uint64_t bits, int bytes, int arg, int width) {
    thread_rec &r = self_for(kind_name(kind));
    if (width <= 0 || width > 32 || (width & (width - 1)))
        fail("%s with width %d: a power of 2 from 1 to 32", kind_name(kind), width);
    r.st = T_WARP;
    r.w = warp_req{kind, mask, bits, bytes, arg, width, 0};
    B.at_warp++;
    B.waiting_warps.push_back(g_thread / 32);
    leave(r.f);
    return B.t[g_thread].w.result;
}

} // namespace emu

void __syncthreads(void) {
    thread_rec &r = self_for("__syncthreads");
    r.st = T_BARRIER;
    r.pc = __builtin_return_address(0);
    B.at_barrier++;
    leave(r.f);
}

void __syncwarp(unsigned int mask) {
    emu::warp_op(emu::WARP_SYNC, mask, 0, 4, 0, 32);
}

void __threadfence(void) {} /* one block at a time: every write is already visible */

unsigned int __activemask(void) {
    self_for("__activemask");
    const unsigned base = g_thread & ~31u;
    unsigned m = 0;
    for (unsigned l = 0; l < 32 && base + l < B.n; l++)
        if (B.t[base + l].st != T_DONE) m |= 1u << l;
    return m;
}
