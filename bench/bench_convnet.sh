#!/usr/bin/env bash
# Classifier throughput of dap vs PyTorch (same machine, same thread count), as ratios.
#   bash bench/bench_convnet.sh [threads=2] [batch=256] [steps=5] [arch=convnet3|resnetap10|resnet18]  (after make)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/blas-env.sh
threads=${1:-2}; batch=${2:-256}; steps=${3:-5}; arch=${4:-convnet3}
BLAS_INC=/usr/include/x86_64-linux-gnu/openblas-openmp BLAS_LIB=/usr/lib/x86_64-linux-gnu/openblas-openmp
mkdir -p build/bench
cc -std=c11 -O3 -march=native -fopenmp -D_GNU_SOURCE -Iinclude -Isrc -I$BLAS_INC bench/bench_convnet.c \
   build/libdap.a -L$BLAS_LIB -Wl,-rpath,$BLAS_LIB -lopenblas -lpng -ljpeg -lz -lm -o build/bench/bench_convnet
c=$(OMP_NUM_THREADS=$threads ./build/bench/bench_convnet "$batch" "$steps" "$arch")
p=$(/usr/bin/python3 bench/bench_convnet.py "$batch" "$steps" "$threads" "$arch")
echo "$c"; echo "$p"
num() { sed -E "s/.*$1 ([0-9.]+) img\/s.*/\1/"; }
awk -v ct="$(echo "$c" | num train)" -v pt="$(echo "$p" | num train)" \
    -v ci="$(echo "$c" | num inference)" -v pi="$(echo "$p" | num inference)" \
    'BEGIN { printf "ratio dap/pytorch: train %.2fx, inference %.2fx\n", ct / pt, ci / pi }'
