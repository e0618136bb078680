#!/usr/bin/env bash
# For a GPU machine that is not Debian 12 and cannot install packages (a lent or rented box
# with only the NVIDIA driver, CUDA 13 and PyTorch): what the GPU checks need there, made here.
#
#   scripts/gpu-bundle.sh pack .gpu       # here (Debian 12, network): fills .gpu, prints what travels
#   s=$(scripts/gpu-bundle.sh setup .gpu) && eval "$s" && scripts/gpu-diffusion-check.sh   # there, as
#                                         # root, from the repo root (the device tool: carry [".gpu"])
#   (or SKIP_PEER=1 SETS=... scripts/gpu-check.sh after the same setup)
#
# pack DIR (inside the repo: DIR goes into .git/info/exclude, so the device tool sends it only
#   when its carry names it):
#   - builds dap, dap_tests, bench_dit and bench_vae with `make CUDA=1 ARCH=-march=x86-64-v3`
#     (the host code must run on the GPU machine's CPU, which -march=native here may not
#     match) in a build folder of its own, GPU_BUILD (default .gpu-build, also excluded):
#     build-cuda/ (`make CUDA=1`, -march=native) is never read or written, so no object built
#     for this CPU can slip in. The four programs go into DIR/build-cuda.tar.xz (with
#     build-info.txt: commit, date, flags); setup unpacks them into build-cuda/ there.
#   - downloads the runtime libraries they link (OpenBLAS and its Fortran runtime, libpng,
#     libjpeg) as Debian packages and keeps their shared objects alone: DIR/libs.tar.xz.
#   - copies Fashion-MNIST into DIR/fmnist. TRAIN_N (default 1000; 0: all 60,000) keeps the
#     first TRAIN_N training images only, to fit a small upload: `dap eval --train DIR` reads
#     the training split only for the image shape (Fashion-MNIST's normalisation is a
#     constant), so its results do not change (checked: the same accuracy with either file);
#     `--train full`, `random:IPC` above TRAIN_N / 10 and `--val` need TRAIN_N=0.
#   - downloads the wheels of the VAE's PyTorch peer (bench/vae_torch.py), WHEELS (default
#     diffusers==0.27.2 huggingface_hub==0.25.2: diffusers 0.27.2 needs huggingface_hub's
#     cached_download, gone from the machine's newer one), their members stored rather than
#     deflated so that xz packs them (0.8 MB, not 2.5): DIR/wheels.tar.xz.
#   - prints the size that will travel (the working tree the device tool sends, tracked and
#     untracked-not-ignored files, plus DIR) and fails over MAX_MIB (default 60; the tool
#     refuses more than 64 MiB).
#   SKIP_BUILD=1 leaves out the build, SKIP_DEBS=1 the downloads (libraries and wheels),
#   SKIP_WHEELS=1 the wheels alone (SKIP_BUILD=1 SKIP_DEBS=1: the data part alone, as
#   tests/cli/eval.sh runs it).
# setup DIR: unpacks the programs into build-cuda/, the libraries under /tmp/dap-sys (not over
#   /), links into /tmp/dap-sys/lib the ones the machine lacks, installs the data where dap
#   looks for it (/usr/local/share/datasets/fashion-mnist) and the wheels into /tmp/dap-site
#   (pip --target, offline), and prints the lines to eval (LD_LIBRARY_PATH; PYTHONPATH with
#   /tmp/dap-site first, so its huggingface_hub shadows the machine's). It exits 1, saying
#   why on stderr and printing nothing to eval, when the bundle lacks a part or a program
#   still lacks a library. A failed wheel install only warns: the VAE jobs then lose their
#   PyTorch side.
set -euo pipefail
cd "$(dirname "$0")/.."
verb=${1:-}; dir=${2:-}
[ -n "$verb" ] && [ -n "$dir" ] || { echo "usage: scripts/gpu-bundle.sh pack|setup DIR" >&2; exit 2; }
PROGS="dap dap_tests bench_dit bench_vae"
FMNIST_FILES="t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz"
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
case $verb in
pack)
  n=${TRAIN_N:-1000}
  case $n in ''|*[!0-9]*) echo "gpu-bundle: TRAIN_N must be a count of images, not '$n'" >&2; exit 2 ;; esac
  [ "$n" -le 60000 ] || { echo "gpu-bundle: TRAIN_N $n is over the 60000 training images" >&2; exit 2; }
  src=/usr/share/datasets/fashion-mnist
  [ -f $src/t10k-images-idx3-ubyte.gz ] || { echo "gpu-bundle: no Fashion-MNIST in $src (make deps)" >&2; exit 1; }
  # what the device tool must not send unless carried: DIR and the build folder, when inside the repo
  inrepo() { case $(realpath -m --relative-to=. "$1") in ..|../*|/*) return 1 ;; esac; }
  exclude() {
    local rel; rel=$(realpath -m --relative-to=. "$1")
    git rev-parse --is-inside-work-tree >/dev/null 2>&1 && inrepo "$1" || return 0
    mkdir -p "$1"
    git check-ignore -q "$rel" 2>/dev/null && return 0
    local ex; ex=$(git rev-parse --git-path info/exclude); mkdir -p "$(dirname "$ex")"
    echo "/$rel/" >> "$ex"; echo "gpu-bundle: added /$rel/ to $ex" >&2
  }
  [ "$(realpath -m "$dir")" != "$(pwd -P)" ] || { echo "gpu-bundle: DIR must be a folder of its own, not the repo" >&2; exit 2; }
  exclude "$dir"
  mkdir -p "$dir/fmnist"
  rm -rf "$dir/debs" "$dir/whl" # an older bundle's (now libs.tar.xz, wheels.tar.xz)
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    b=${GPU_BUILD:-.gpu-build}; arch=-march=x86-64-v3; exclude "$b"
    # make rebuilds what changed, not what another ARCH built: only a folder this script made will do
    if [ -n "$(find "$b" -mindepth 1 -maxdepth 1 ! -name .arch 2>/dev/null | head -1)" ] &&
       [ "$(cat "$b/.arch" 2>/dev/null)" != "$arch" ]; then
      echo "gpu-bundle: $b/ holds a build that pack did not make (another or unknown ARCH; make CUDA=1 builds" \
           "-march=native): rm -rf $b, or leave GPU_BUILD unset, and pack again" >&2; exit 1
    fi
    mkdir -p "$b"; echo "$arch" > "$b/.arch"
    make CUDA=1 ARCH="$arch" BUILD="$b" -j"$(nproc)" all "$b/bench_dit" "$b/bench_vae" >&2
    for p in $PROGS; do # grep -c, not -q: objdump killed by SIGPIPE would fail the pipeline
      if [ "$(objdump -d "$b/$p" | grep -c zmm || true)" != 0 ]; then
        echo "gpu-bundle: $b/$p holds AVX-512 code (built with another ARCH): rm -rf $b and pack again" >&2; exit 1
      fi
    done
    { echo "built $(date -u +%Y-%m-%dT%H:%MZ) from $(git describe --always --dirty 2>/dev/null || echo 'no git')"
      echo "make CUDA=1 ARCH=$arch ($(/usr/local/cuda/bin/nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'nvcc ?'))"
    } > "$b/build-info.txt"
    tar -C "$b" -cf - $PROGS build-info.txt | xz -9 -T0 > "$dir/build-cuda.tar.xz.part"
    mv "$dir/build-cuda.tar.xz.part" "$dir/build-cuda.tar.xz"
  fi
  if [ "${SKIP_DEBS:-0}" != 1 ]; then
    t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
    (cd "$t" && apt-get download libopenblas0-openmp libgfortran5 libquadmath0 libpng16-16 libjpeg62-turbo) >&2
    for f in "$t"/*.deb; do dpkg -x "$f" "$t/root"; done
    (cd "$t/root" && find usr/lib -name 'lib*.so*' ! -name 'libblas*' ! -name 'liblapack*' | sort) > "$t/list"
    tar -C "$t/root" -cf - -T "$t/list" | xz -9 -T0 > "$dir/libs.tar.xz.part"
    mv "$dir/libs.tar.xz.part" "$dir/libs.tar.xz"
    if [ "${SKIP_WHEELS:-0}" != 1 ]; then
      pip="python3 -m pip"; [ -x /tmp/venv/bin/pip ] && pip=/tmp/venv/bin/pip
      $pip download -q --no-deps --only-binary=:all: -d "$t/whl" ${WHEELS:-diffusers==0.27.2 huggingface_hub==0.25.2} >&2
      # the same wheels, their members stored rather than deflated, in one xz stream: 0.8 MB, not 2.5
      mkdir "$t/stored"
      python3 - "$t/whl" "$t/stored" <<'PY'
import glob, os, sys, zipfile
for w in sorted(glob.glob(os.path.join(sys.argv[1], "*.whl"))):
    with zipfile.ZipFile(w) as zi, zipfile.ZipFile(os.path.join(sys.argv[2], os.path.basename(w)), "w") as zo:
        for info in zi.infolist():
            zo.writestr(info, zi.read(info.filename), compress_type=zipfile.ZIP_STORED)
PY
      tar -C "$t/stored" -cf - . | xz -9 -T0 > "$dir/wheels.tar.xz.part"
      mv "$dir/wheels.tar.xz.part" "$dir/wheels.tar.xz"
    fi
  fi
  cp $src/t10k-*.gz "$dir/fmnist/"
  if [ "$n" = 0 ]; then
    cp $src/train-*.gz "$dir/fmnist/"
  else # an IDX file is a big-endian header (magic, count, dims) and the rows: rewrite the count
    tmp=$(mktemp); trap 'rm -f "$tmp"; rm -rf "${t:-}"' EXIT
    for f in train-images-idx3-ubyte.gz:16:784 train-labels-idx1-ubyte.gz:8:1; do
      IFS=: read -r name hdr row <<< "$f"
      gzip -dc $src/$name > "$tmp"
      { head -c 4 "$tmp"; printf "$(printf '\\x%02x' $((n >> 24 & 255)) $((n >> 16 & 255)) $((n >> 8 & 255)) $((n & 255)))";
        head -c $((hdr + n * row)) "$tmp" | tail -c +9; } | gzip -9 > "$dir/fmnist/$name.part"
      mv "$dir/fmnist/$name.part" "$dir/fmnist/$name"
    done
  fi
  (cd "$dir" && find . -type f | sort | xargs ls -l | awk '{ printf "  %9d  %s\n", $5, $9 }') >&2
  rel=$(realpath -m --relative-to=. "$dir")
  if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo "gpu-bundle: no git work tree here: cannot tell what the device tool would send" >&2; exit 0
  fi
  if ! inrepo "$dir"; then
    echo "gpu-bundle: $dir is outside the repo: the device tool sends only the repo (pack into a folder of it, e.g. .gpu)" >&2; exit 0
  fi
  # the device tool sends tracked and untracked-not-ignored files, plus the carried paths
  tree=$(git ls-files -z -co --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
  bundle=$(du -sb "$dir" | cut -f1); total=$((tree + bundle)); max=${MAX_MIB:-60}
  echo "gpu-bundle: what travels: the working tree $(mib "$tree") MiB (tracked and untracked-not-ignored files)" \
       "+ $rel $(mib "$bundle") MiB = $(mib "$total") MiB of the device tool's 64 MiB" >&2
  if [ "$total" -gt $((max * 1048576)) ]; then
    echo "gpu-bundle: TOO BIG: $(mib "$total") MiB is over MAX_MIB $max MiB (the device tool refuses over 64 MiB;" \
         "MAX_MIB=63 accepts up to 63)." >&2
    echo "gpu-bundle: the largest untracked-not-ignored files (remove them or list them in .git/info/exclude):" >&2
    git ls-files -z -o --exclude-standard | du -b --files0-from=- 2>/dev/null | sort -rn | head -5 | sed 's/^/  /' >&2
    exit 1
  fi
  [ -f "$dir/build-cuda.tar.xz" ] && [ -f "$dir/libs.tar.xz" ] ||
    echo "gpu-bundle: NOTE: $rel lacks build-cuda.tar.xz or libs.tar.xz (SKIP_BUILD / SKIP_DEBS): setup will refuse it" >&2
  echo "gpu-bundle: ready. Device tool: carry [\"$rel\"] (nothing else: the programs are inside it), command:" >&2
  echo "  s=\$(scripts/gpu-bundle.sh setup $rel) && eval \"\$s\" && scripts/gpu-diffusion-check.sh" >&2 ;;
setup)
  exec 3>&1 1>&2 # stdout is eval'd: only the export lines go there (fd 3)
  fail() { echo "gpu-bundle setup: $*" >&2; exit 1; }
  [ -d "$dir" ] || fail "no $dir here: pack it here (scripts/gpu-bundle.sh pack $dir) and name it in the device tool's carry"
  miss=""
  for f in build-cuda.tar.xz libs.tar.xz $(printf 'fmnist/%s ' $FMNIST_FILES); do [ -s "$dir/$f" ] || miss="$miss $dir/$f"; done
  [ -z "$miss" ] || fail "the bundle lacks:$miss (scripts/gpu-bundle.sh pack $dir here, without SKIP_BUILD / SKIP_DEBS)"
  untar() { # ARCHIVE DIR: tar with xz, else Python's lzma
    mkdir -p "$2"
    if command -v xz >/dev/null; then tar -xJf "$1" -C "$2"
    else "${PY:-python3}" -W ignore -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"; fi
  }
  untar "$dir/build-cuda.tar.xz" build-cuda || fail "could not unpack $dir/build-cuda.tar.xz (no xz and no python3?)"
  for p in $PROGS; do [ -x "build-cuda/$p" ] || fail "$dir/build-cuda.tar.xz holds no $p"; done
  [ -f build-cuda/build-info.txt ] && sed 's/^/gpu-bundle setup: build-cuda: /' build-cuda/build-info.txt
  sys=/tmp/dap-sys; rm -rf $sys
  untar "$dir/libs.tar.xz" $sys || fail "could not unpack $dir/libs.tar.xz"
  mkdir -p $sys/lib # links to the bundle's libraries the machine lacks, and no others
  lib=$sys/lib
  command -v ldd >/dev/null || fail "no ldd here: cannot check the programs' libraries"
  unresolved() { # the libraries the programs still lack, one a line
    local p; for p in $PROGS; do LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ldd "build-cuda/$p" 2>&1 || true; done |
      awk '/not found/ { print $1 }' | sort -u; }
  for _ in 1 2 3 4; do # a found library can need another (OpenBLAS: libgfortran)
    added=0
    for so in $(unresolved); do
      f=$(find $sys/usr -name "$so" 2>/dev/null | head -1 || true)
      [ -n "$f" ] && ln -sf "$(readlink -f "$f")" "$sys/lib/$so" && added=1
    done
    [ $added = 1 ] || break
  done
  if [[ " $(unresolved | tr '\n' ' ')" == *" libcublas"* ]]; then # cuBLAS outside /usr/local/cuda (a pip wheel, say)
    c=$(find / \( -path /proc -o -path /sys \) -prune -o -name 'libcublas.so.13*' -print 2>/dev/null | head -1 || true)
    [ -n "$c" ] && lib=$lib:$(dirname "$c")
  fi
  missing=$(unresolved | tr '\n' ' ')
  [ -z "$missing" ] || fail "build-cuda/ still lacks: $missing"
  echo "gpu-bundle setup: the bundle's libraries in use: $(ls $sys/lib | tr '\n' ' ')"
  fm=/usr/local/share/datasets/fashion-mnist
  mkdir -p $fm && cp "$dir"/fmnist/*.gz $fm/ || fail "could not copy Fashion-MNIST into $fm"
  py_line=""
  if [ -s "$dir/wheels.tar.xz" ]; then
    whl=/tmp/dap-whl; site=/tmp/dap-site; rm -rf $whl $site
    if untar "$dir/wheels.tar.xz" $whl && "${PY:-python3}" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target $site --find-links $whl $whl/*.whl; then
      py_line="export PYTHONPATH=$site\${PYTHONPATH:+:\$PYTHONPATH}"
      echo "gpu-bundle setup: $(cd $whl && ls *.whl | tr '\n' ' ')installed in $site, first on PYTHONPATH"
    else
      echo "gpu-bundle setup: WARNING: the wheels did not install: the VAE jobs will lack their PyTorch side"
    fi
  else
    echo "gpu-bundle setup: WARNING: no $dir/wheels.tar.xz: the VAE jobs need the machine's own diffusers"
  fi
  echo "export LD_LIBRARY_PATH=$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" >&3
  [ -z "$py_line" ] || echo "$py_line" >&3 ;;
*) echo "gpu-bundle: unknown verb $verb (pack or setup)" >&2; exit 2 ;;
esac
