#!/usr/bin/env bash
# For a GPU machine that is not Debian 12 and cannot install packages (a lent or rented box
# with only the NVIDIA driver and CUDA 13): what `scripts/gpu-check.sh` needs there, made here.
#
#   scripts/gpu-bundle.sh pack DIR          # here (Debian 12): fills DIR
#   eval "$(scripts/gpu-bundle.sh setup DIR)"   # there, as root, from the repo root
#   SKIP_PEER=1 SETS=... scripts/gpu-check.sh   # there
#
# pack: builds build-cuda/ with a portable CPU target (ARCH=-march=x86-64-v3: the host code
#   must run on the GPU machine's CPU, which -march=native here may not match), downloads the
#   runtime libraries build-cuda/dap links (OpenBLAS and its Fortran runtime, libpng, libjpeg)
#   as Debian packages, and copies Fashion-MNIST. TRAIN_N (default 1000; 0: all 60,000) keeps
#   the first TRAIN_N training images only, to fit a small upload: `dap eval --train DIR`
#   reads the training split only for the image shape (Fashion-MNIST's normalisation is a
#   constant), so its results do not change (checked: the same accuracy with either file);
#   `--train full`, `random:IPC` and `--val` need TRAIN_N=0. SKIP_BUILD=1 and SKIP_DEBS=1
#   leave out the build and the download (the data part alone, as tests/cli/eval.sh runs it).
# setup: unpacks the packages under /tmp/dap-sys (not over /), installs the data where dap
#   looks for it (/usr/local/share/datasets/fashion-mnist) and prints the LD_LIBRARY_PATH
#   line to eval; it fails naming any library build-cuda/dap still cannot find.
set -euo pipefail
cd "$(dirname "$0")/.."
verb=${1:-}; dir=${2:-}
[ -n "$verb" ] && [ -n "$dir" ] || { echo "usage: scripts/gpu-bundle.sh pack|setup DIR" >&2; exit 2; }
case $verb in
pack)
  mkdir -p "$dir/debs" "$dir/fmnist"
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    make CUDA=1 ARCH=-march=x86-64-v3 -j"$(nproc)" all build-cuda/bench_dit build-cuda/bench_vae >&2
    if objdump -d build-cuda/dap | grep zmm >/dev/null; then
      echo "gpu-bundle: build-cuda/ holds AVX-512 code: rm -rf build-cuda and pack again" >&2; exit 1
    fi
  fi
  [ "${SKIP_DEBS:-0}" = 1 ] ||
    (cd "$dir/debs" && apt-get download libopenblas0-openmp libgfortran5 libquadmath0 libpng16-16 libjpeg62-turbo) >&2
  src=/usr/share/datasets/fashion-mnist
  [ -f $src/t10k-images-idx3-ubyte.gz ] || { echo "gpu-bundle: no Fashion-MNIST in $src (make deps)" >&2; exit 1; }
  cp $src/t10k-*.gz "$dir/fmnist/"
  n=${TRAIN_N:-1000}
  case $n in ''|*[!0-9]*) echo "gpu-bundle: TRAIN_N must be a count of images, not '$n'" >&2; exit 2 ;; esac
  [ "$n" -le 60000 ] || { echo "gpu-bundle: TRAIN_N $n is over the 60000 training images" >&2; exit 2; }
  if [ "$n" = 0 ]; then
    cp $src/train-*.gz "$dir/fmnist/"
  else # an IDX file is a big-endian header (magic, count, dims) and the rows: rewrite the count
    tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
    for f in train-images-idx3-ubyte.gz:16:784 train-labels-idx1-ubyte.gz:8:1; do
      IFS=: read -r name hdr row <<< "$f"
      gzip -dc $src/$name > "$tmp"
      { head -c 4 "$tmp"; printf "$(printf '\\x%02x' $((n >> 24 & 255)) $((n >> 16 & 255)) $((n >> 8 & 255)) $((n & 255)))";
        head -c $((hdr + n * row)) "$tmp" | tail -c +9; } | gzip -9 > "$dir/fmnist/$name.part"
      mv "$dir/fmnist/$name.part" "$dir/fmnist/$name"
    done
  fi
  du -sh "$dir" >&2
  echo "gpu-bundle: carry $dir, build-cuda/dap, build-cuda/dap_tests and the sets to evaluate" >&2 ;;
setup)
  sys=/tmp/dap-sys; mkdir -p $sys
  for f in "$dir"/debs/*.deb; do dpkg -x "$f" $sys; done
  lib=$sys/usr/lib/x86_64-linux-gnu/openblas-openmp:$sys/usr/lib/x86_64-linux-gnu
  unresolved() { LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ldd build-cuda/dap | grep "not found" || true; }
  if unresolved | grep libcublas >/dev/null; then # cuBLAS outside /usr/local/cuda (a pip wheel, say)
    c=$(find / -name 'libcublas.so.13*' -not -path '/proc/*' 2>/dev/null | head -1)
    [ -n "$c" ] && lib=$lib:$(dirname "$c")
  fi
  missing=$(unresolved)
  [ -z "$missing" ] || { echo "gpu-bundle: build-cuda/dap still lacks: $missing" >&2; exit 1; }
  mkdir -p /usr/local/share/datasets/fashion-mnist
  cp "$dir"/fmnist/*.gz /usr/local/share/datasets/fashion-mnist/
  echo "export LD_LIBRARY_PATH=$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" ;;
*) echo "gpu-bundle: unknown verb $verb (pack or setup)" >&2; exit 2 ;;
esac
