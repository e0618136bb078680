#!/usr/bin/env bash
# One 3x3 convolution layer: dap im2col, dap Winograd and PyTorch (same run, same
# threads), milliseconds per pass and the ratio PyTorch / dap Winograd (> 1: dap faster).
#   bash bench/bench_conv.sh [threads=1] [iters=4]   (after make)
# The shapes are the classifiers' bodies: ConvNet-3 at batch 256, ResNet-18 at batch 100.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/blas-env.sh
threads=${1:-1}; iters=${2:-4}
BLAS_INC=/usr/include/x86_64-linux-gnu/openblas-openmp BLAS_LIB=/usr/lib/x86_64-linux-gnu/openblas-openmp
mkdir -p build/bench
cc -std=c11 -O3 -march=native -fopenmp -D_GNU_SOURCE -Iinclude -Isrc -I$BLAS_INC bench/bench_conv.c \
   build/libdap.a -L$BLAS_LIB -Wl,-rpath,$BLAS_LIB -lopenblas -lpng -ljpeg -lz -lm -o build/bench/bench_conv
ms() { sed -E "s/.*$1 ([0-9.]+) ms.*/\1/"; }
for shape in "256 128 16 128" "256 128 8 128" "100 64 28 64" "100 128 14 128" "100 256 7 256" "100 512 4 512"; do
    c=$(OMP_NUM_THREADS=$threads ./build/bench/bench_conv $shape "$iters")
    p=$(/usr/bin/python3 bench/bench_conv.py $shape "$iters" "$threads")
    echo "$c"; echo "$p"
    wino=$(echo "$c" | grep winograd)
    awk -v f1="$(echo "$p" | ms forward)" -v f2="$(echo "$wino" | ms forward)" \
        -v x1="$(echo "$p" | ms dx)" -v x2="$(echo "$wino" | ms dx)" \
        -v w1="$(echo "$p" | ms dw)" -v w2="$(echo "$wino" | ms dw)" \
        'BEGIN { printf "ratio pytorch/dap-winograd: forward %.2fx, dx %.2fx, dw %.2fx\n\n", f1 / f2, x1 / x2, w1 / w2 }'
done
