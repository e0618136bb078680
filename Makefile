# dap: build, test, demo. `make` builds build/dap and build/libdap.a.
#   make DEBUG=1      -O0 -g
#   make SAN=1        AddressSanitizer + UBSan (build dir build-san/)
#   make CUDA=1       also the CUDA backend (src/cuda/, nvcc + cuBLAS; build dir build-cuda/);
#                     CUDA_HOME (/usr/local/cuda), CUDA_ARCH (sm_80 + sm_90 + PTX)
#   make emu          the CUDA backend on the CPU through tests/cuda-emu (no GPU, nvcc or cuBLAS;
#                     build dir build-emu/): dap, dap_tests, emu_selftest; make test-emu runs them
#   make test         installs missing packages, builds, runs the suite (+ the I/O and
#                     op tests again under ASan/UBSan)
#   make demo         the main job on the embedded default (Fashion-MNIST)
#   make install      PREFIX (/usr/local)/bin/dap, lib/libdap.a, include/dap.h, lib/pkgconfig/dap.pc,
#                     share/dap/models/ (the shipped models and flags files); DESTDIR for staging
#   make uninstall    removes what make install put there (same PREFIX / DESTDIR)
CC      ?= gcc
BLAS_INC = /usr/include/x86_64-linux-gnu/openblas-openmp
BLAS_LIB = /usr/lib/x86_64-linux-gnu/openblas-openmp
ARCH    ?= -march=native
CFLAGS_BASE = -std=c11 -Wall -Wextra -Werror -Wno-unknown-pragmas -fopenmp -D_GNU_SOURCE \
              -Iinclude -Isrc -I$(BLAS_INC)
LDLIBS  = -L$(BLAS_LIB) -Wl,-rpath,$(BLAS_LIB) -lopenblas -lpng -ljpeg -lz -lm -fopenmp

# the emulated CUDA build (make emu) never shares a build dir with the others
ifeq ($(EMU),1)
  BUILD ?= build-emu
endif

ifeq ($(SAN),1)
  BUILD ?= build-san
  OPT = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
  LDLIBS += -fsanitize=address,undefined
else ifeq ($(DEBUG),1)
  BUILD ?= build-debug
  OPT = -O0 -g
else
  BUILD ?= $(if $(filter 1,$(CUDA)),build-cuda,build)
  OPT = -O3 $(ARCH) -ffp-contract=fast
endif
CFLAGS = $(CFLAGS_BASE) $(OPT) $(EXTRA_CFLAGS)

ifeq ($(CUDA),1)
  CUDA_HOME ?= /usr/local/cuda
  NVCC      ?= $(CUDA_HOME)/bin/nvcc
  CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
               -gencode arch=compute_90,code=compute_90
  CFLAGS   += -DDAP_CUDA
  CU_SRC    = $(sort $(wildcard src/cuda/*.cu))
  CU_OBJ    = $(CU_SRC:%.cu=$(BUILD)/%.o)
  # the runtime static, cuBLAS from the toolkit (or $LD_LIBRARY_PATH) at run time
  LDLIBS   += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart_static \
              -ldl -lrt -lpthread -lstdc++
endif

# make emu: src/cuda/*.cu translated to C++ (tests/cuda-emu/translate.sh: launches rewritten) and
# compiled with g++ against the emulator's cuda_runtime.h / cublas_v2.h, plus the emulator
# itself; the C sources with -DDAP_CUDA as in the CUDA build. No sibling calls: a __syncthreads
# keeps its caller's address (the emulator compares them); -rdynamic: backtrace names.
ifeq ($(EMU),1)
  EMU_DIR   = tests/cuda-emu
  EMU_CXX   = $(CXX) -std=c++17 -O2 -g -fopenmp -DDAP_CUDA -Iinclude -Isrc -I$(EMU_DIR) -I$(BLAS_INC)
  CFLAGS   += -DDAP_CUDA
  CU_SRC    = $(sort $(wildcard src/cuda/*.cu))
  EMU_SRC   = $(sort $(wildcard $(EMU_DIR)/*.cpp))
  LDLIBS   += -lstdc++ -rdynamic
  EMU_OBJ   = $(EMU_SRC:$(EMU_DIR)/%.cpp=$(BUILD)/emu/%.o)
  CU_OBJ    = $(CU_SRC:%.cu=$(BUILD)/emu/%.o) $(EMU_OBJ)
endif

LIB_SRC   = $(sort $(wildcard src/*/*.c))
TOOL_SRC  = $(sort $(wildcard tools/*.c))
TEST_SRC  = $(sort $(wildcard tests/*.c))
LIB_OBJ   = $(LIB_SRC:%.c=$(BUILD)/%.o) $(CU_OBJ)
# ar keys archive members by file name: two sources with one name would lose one
DUP_NAMES := $(shell printf '%s\n' $(notdir $(LIB_SRC)) | sort | uniq -d)
ifneq ($(DUP_NAMES),)
$(error library sources share a file name, which libdap.a cannot hold twice: $(DUP_NAMES))
endif
TOOL_OBJ  = $(TOOL_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ  = $(TEST_SRC:%.c=$(BUILD)/%.o)
DEPS      = $(LIB_OBJ:.o=.d) $(TOOL_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/bench/bench_dit.d

.PHONY: all deps test test-fast test-san demo demo-full bench clean format install uninstall
all: $(BUILD)/dap $(BUILD)/dap_tests

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) -O3 -std=c++17 $(CUDA_ARCH) -DDAP_CUDA -Iinclude -Isrc -Xcompiler -fopenmp,-Wall \
	    -MMD -MP -c $< -o $@

ifeq ($(EMU),1) # the emulator's build (make emu)
$(BUILD)/emu/%.cpp: %.cu $(EMU_DIR)/translate.sh
	@mkdir -p $(dir $@)
	sh $(EMU_DIR)/translate.sh $< > $@.tmp && mv $@.tmp $@

$(BUILD)/emu/%.o: $(BUILD)/emu/%.cpp
	$(EMU_CXX) -Wall -fno-optimize-sibling-calls -include cuda_runtime.h -MMD -MP -c $< -o $@

$(BUILD)/emu/%.o: $(EMU_DIR)/%.cpp
	@mkdir -p $(dir $@)
	$(EMU_CXX) -Wall -Wextra -Werror -MMD -MP -c $< -o $@

$(BUILD)/emu_selftest: $(BUILD)/emu/$(EMU_DIR)/selftest.o $(EMU_OBJ)
	$(CXX) -o $@ $^ $(LDLIBS)
-include $(BUILD)/emu/$(EMU_DIR)/selftest.d

.PRECIOUS: $(BUILD)/emu/%.cpp
endif

$(BUILD)/libdap.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/dap: $(TOOL_OBJ) $(BUILD)/libdap.a
	$(CC) -o $@ $(TOOL_OBJ) $(BUILD)/libdap.a $(LDLIBS)

$(BUILD)/dap_tests: $(TEST_OBJ) $(BUILD)/libdap.a
	$(CC) -o $@ $(TEST_OBJ) $(BUILD)/libdap.a $(LDLIBS)

deps:
	@bash scripts/install-deps.sh

# The whole suite: unit tests, the sanitizer pass, the CUDA tests on the emulator (make emu),
# then command-line smoke tests.
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory SAN=1 all
	@$(MAKE) --no-print-directory emu
	@bash tests/run.sh

test-fast: all
	./$(BUILD)/dap_tests

# The CUDA backend's tests on the CPU (tests/cuda-emu/README.md), DiT-XL/2 included (make test
# runs them at 8 GiB, without it): as written, then with the work of each stream as late as
# CUDA allows and the blocks and threads in reverse order (8 GiB: DiT-XL/2 once is enough).
.PHONY: emu test-emu
emu:
	@$(MAKE) --no-print-directory EMU=1 build-emu/dap build-emu/dap_tests build-emu/emu_selftest

test-emu: emu
	./build-emu/emu_selftest
	./build-emu/dap_tests device_select cuda
	DAP_EMU_ASYNC=1 DAP_EMU_REVERSE=1 DAP_CUDA_SPLIT_STATE=1 DAP_EMU_MEM_MB=8192 ./build-emu/dap_tests device_select cuda

demo: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/demo.sh

bench: all $(BUILD)/bench_dit $(BUILD)/bench_vae
	@bash bench/run.sh

$(BUILD)/bench_dit: $(BUILD)/bench/bench_dit.o $(BUILD)/libdap.a
	$(CC) -o $@ $< $(BUILD)/libdap.a $(LDLIBS)

$(BUILD)/bench_vae: $(BUILD)/bench/bench_vae.o $(BUILD)/libdap.a
	$(CC) -o $@ $< $(BUILD)/libdap.a $(LDLIBS)

# Installation. The program looks for models/... paths that the current directory lacks in
# $DAP_DATA_DIR, else in EXE/../share/dap (so an installed tree can move), else in the
# DATADIR compiled into tools/flags.c.
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR   = $(PREFIX)/bin
LIBDIR   = $(PREFIX)/lib
INCDIR   = $(PREFIX)/include
PCDIR    = $(LIBDIR)/pkgconfig
DATADIR  = $(PREFIX)/share/dap
VERSION := $(shell sed -n 's/^\#define DAP_VERSION "\(.*\)"/\1/p' include/dap.h)
SHIPPED  = $(sort $(wildcard models/*.safetensors models/*.flags models/*.defaults models/*.log models/*.md))
$(BUILD)/tools/flags.o: CFLAGS += -DDAP_DATADIR='"$(DATADIR)"'

install: $(BUILD)/dap $(BUILD)/libdap.a
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(PCDIR) \
	    $(DESTDIR)$(DATADIR)/models
	install -m 755 $(BUILD)/dap $(DESTDIR)$(BINDIR)/dap
	install -m 644 $(BUILD)/libdap.a $(DESTDIR)$(LIBDIR)/libdap.a
	install -m 644 include/dap.h $(DESTDIR)$(INCDIR)/dap.h
	install -m 644 $(SHIPPED) $(DESTDIR)$(DATADIR)/models/
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$${prefix}/lib' 'includedir=$${prefix}/include' \
	    'datadir=$${prefix}/share/dap' '' 'Name: dap' \
	    'Description: generative dataset distillation with diffusion priors (static library)' \
	    'Version: $(VERSION)' 'Cflags: -I$${includedir}' \
	    'Libs: -L$${libdir} -ldap $(LDLIBS)' > $(DESTDIR)$(PCDIR)/dap.pc
	@echo "installed dap $(VERSION) under $(DESTDIR)$(PREFIX)"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/dap $(DESTDIR)$(LIBDIR)/libdap.a $(DESTDIR)$(INCDIR)/dap.h \
	    $(DESTDIR)$(PCDIR)/dap.pc $(addprefix $(DESTDIR)$(DATADIR)/,$(SHIPPED))
	-rmdir $(DESTDIR)$(DATADIR)/models $(DESTDIR)$(DATADIR) 2>/dev/null

format:
	clang-format -i include/*.h src/*/*.[ch] tools/*.[ch] tests/*.[ch]

clean:
	rm -rf build build-san build-debug

-include $(DEPS)
