#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, in one run of about 5 minutes: the DiT on the GPU
# against the CPU (tests), then its speed against PyTorch eager on the same GPU.
#
#   scripts/gpu-diffusion-check.sh                 # there, from the repo root
#   DEVICE=cpu CONFIG=fm-tiny TRAIN_CONFIG=fm-tiny BUILD=build JOBS="fwd32:fp32 guide:fp32 train:fp32" SKIP_TESTS=1 \
#     scripts/gpu-diffusion-check.sh               # here: the plumbing alone, on the CPU
#
# 1. build: $BUILD (default build-cuda) with `make CUDA=1 -j$(nproc)` unless $BUILD/dap_tests
#    and $BUILD/bench_dit are already there (built here and carried: scripts/gpu-bundle.sh
#    pack, plus `make CUDA=1 ARCH=-march=x86-64-v3 build-cuda/bench_dit`).
# 2. tests: $BUILD/dap_tests cuda (the device choice, the classifiers, every DiT kernel per
#    precision, the DiT's forward / features / backward from block l on a small config and on
#    DiT-XL/2 at batch 1, the memory errors, a CFG DDIM run and a DAP distillation end to
#    end), then the commands: a 3-step fm-tiny model trained on a tiny random IDX set with
#    --device cpu and --device $DEVICE (the logged losses compared), then
#    `dap sample` and `dap distill --method dap` with --device cpu and --device $DEVICE, the
#    images compared (at most 2 grey levels apart). The log: $OUT/tests.txt. A failure does not stop the run (a lent GPU's minutes are
#    few: the timings come back too) but makes the script exit 1 at the end; STRICT=1 stops.
# 3. bench: CONFIG (default DiT-XL/2, random full-size weights), each JOBS entry MEASURE:PRECISION
#    as `bench_dit --device $DEVICE` (dap) and `bench/dit_torch.py --device $DEVICE` (PyTorch
#    eager attention), one process each, one after the other:
#      fwd32  one forward at batch 32
#      ddim   one DDIM + CFG step at batch 100 (a forward over 200 samples)
#      guide  one DAP guidance evaluation: N = 100 real samples to block LAYER (default 8), 10
#             synthetic with the partial backward to their inputs, as dap distill runs it
#             (the real rows, the energy and its gradient on the device)
#      guidemean  the same with the tokens' mean as features (--pool mean: pooled on the GPU)
#      train  one DiT training step of TRAIN_CONFIG (default DiT-B/2) at batch 64: forward,
#             eps-MSE, backward, clipping, AdamW and the EMA (PyTorch: DiT's train.py loop)
#      resnet18  one evaluation run (ResNet-18, CNN_EPOCHS (300) epochs) on a random IPC 10
#             Fashion-MNIST set, dap eval (weights, optimiser and the set resident on the GPU, the
#             batches augmented there) against bench/eval_ref.py, and dap with the batches
#             assembled on the host (DAP_CUDA_AUG=0) (also convnet3, resnetap10)
#      vaedec  the SD VAE's decode of VAE_BATCH (8) latents to VAE_SIZE (256) px images, against
#             diffusers' AutoencoderKL (bench/vae_torch.py; needs diffusers), random weights of
#             sd-vae-ft-mse's size written by bench_vae --save (VAE_W); vaeenc: the encode;
#             vaevjp: the decoder's vector-Jacobian product of one latent (igd on a latent
#             prior) against autograd through diffusers' decoder
#    $OUT/bench.jsonl (every JSON line), $OUT/summary.txt (throughputs, dap / PyTorch ratios,
#    peak device memory) and bench/results/gpu-<GPU name>.json. Jobs that would start after
#    DEADLINE seconds (default 420) are skipped, so the run ends inside 8 minutes.
# OUT defaults to out/gpu-diffusion (the device tool's $OUT when set). PY: the Python with
# PyTorch (default python3).
#
# On a lent machine that cannot install packages (no OpenBLAS, libpng, libjpeg headers):
#   here:   scripts/gpu-bundle.sh pack .gpu          (build-cuda/ for x86-64-v3 and the libraries)
#   there:  eval "$(scripts/gpu-bundle.sh setup .gpu)" && scripts/gpu-diffusion-check.sh
#           (carrying .gpu and build-cuda; .gpu listed in .git/info/exclude)
set -uo pipefail
cd "$(dirname "$0")/.."
failed=0
BUILD=${BUILD:-build-cuda}; DEVICE=${DEVICE:-cuda}; CONFIG=${CONFIG:-DiT-XL/2}; LAYER=${LAYER:-8}
JOBS=${JOBS:-fwd32:fp32 ddim:fp32 guide:fp32 guidemean:fp32 train:fp32 vaedec:fp32 vaevjp:fp32 resnet18:fp32 fwd32:tf32 ddim:tf32 train:tf32 fwd32:bf16}
TRAIN_CONFIG=${TRAIN_CONFIG:-DiT-B/2}
CNN_EPOCHS=${CNN_EPOCHS:-300}
VAE_SIZE=${VAE_SIZE:-256}; VAE_BATCH=${VAE_BATCH:-8}; VAE_W=${VAE_W:-/tmp/dap-bench-vae.safetensors}
OUT=${OUT:-out/gpu-diffusion}; PY=${PY:-python3}; DEADLINE=${DEADLINE:-420}; ITERS=${ITERS:-3}
THREADS=${THREADS:-$(nproc)}
mkdir -p "$OUT"
T0=$(date +%s)
say() { echo "gpu-diffusion-check: t=$(( $(date +%s) - T0 )) s  $*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"

if [ ! -x "$BUILD/dap_tests" ] || [ ! -x "$BUILD/bench_dit" ] || [ ! -x "$BUILD/bench_vae" ]; then
  say "building $BUILD"
  flags=""; [ "$BUILD" = build-cuda ] && flags="CUDA=1"
  make $flags -j"$(nproc)" all "$BUILD/bench_dit" "$BUILD/bench_vae" > "$OUT/build.txt" 2>&1 ||
    { say "the build failed (see $OUT/build.txt)"; tail -20 "$OUT/build.txt"; exit 1; }
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/summary.txt"

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  say "tests"
  OMP_NUM_THREADS=$THREADS "$BUILD/dap_tests" device_select cuda > "$OUT/tests.txt" 2>&1
  grep -E "^(ok|FAIL|SKIP) |skipped|max rel|^[0-9]+ passed" "$OUT/tests.txt" | tail -60
  if grep -qE "^SKIP cuda|skipped:" "$OUT/tests.txt" && [ "$DEVICE" = cuda ]; then say "the CUDA tests were skipped: no usable GPU"; exit 1; fi
  if grep -q "^[0-9]* passed, 0 failed" "$OUT/tests.txt"; then say "tests passed"
  else
    failed=1; say "the CUDA tests FAILED: $(grep -E '^FAIL' "$OUT/tests.txt" | tr '\n' ' ') (see $OUT/tests.txt)"
    [ "${STRICT:-0}" = 1 ] && exit 1
  fi
fi

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  say "commands: train, sample and distill on cpu and $DEVICE"
  cli=$(mktemp -d)
  "$PY" - "$cli" <<'PY'
import random, struct, sys
random.seed(0)
n = 10 * 6  # 6 images of each of 10 classes, 28 x 28
with open(sys.argv[1] + "/toy-images-idx3-ubyte", "wb") as f:
    f.write(struct.pack(">IIII", 0x803, n, 28, 28) + bytes(random.randrange(256) for _ in range(n * 784)))
with open(sys.argv[1] + "/toy-labels-idx1-ubyte", "wb") as f:
    f.write(struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n)))
PY
  DAPB=$BUILD/dap; D="$cli/toy-images-idx3-ubyte"; ok=1
  { for dev in cpu "$DEVICE"; do # the same 3 training steps on both (the log's losses compared below)
      "$DAPB" train --data "$D" --config fm-tiny --steps 3 --batch 8 --val-per-class 0 --ckpt-every 3 --log-every 1 \
        --device "$dev" --out "$cli/m-$dev.safetensors" --threads "$THREADS" > "$cli/train-$dev.log" || exit 1
    done
    cp "$cli/m-cpu.safetensors" "$cli/m.safetensors" &&
    for dev in cpu "$DEVICE"; do
      "$DAPB" sample --model "$cli/m.safetensors" --classes 0,3 --n 3 --steps 4 --cfg 2 --batch 4 --device "$dev" \
        --out "$cli/sample-$dev" &&
      "$DAPB" distill --data "$D" --model "$cli/m.safetensors" --method dap --ipc 2 --steps 4 --n-real 4 --layer 1 \
        --gamma 0.1 --classes 0,1 --device "$dev" --quiet --out "$cli/distill-$dev" || exit 1
    done; } >> "$OUT/tests.txt" 2>&1 || ok=0
  if [ "$ok" = 1 ]; then
    "$PY" - "$cli" "$DEVICE" <<'PY' | tee -a "$OUT/tests.txt" || ok=0
import glob, os, sys, zlib
def png_rows(path):  # the pixels of an 8-bit grey / RGB PNG, unfiltered
    data = open(path, "rb").read()
    idat, i, w, h, bpp = b"", 8, 0, 0, 1
    while i < len(data):
        ln = int.from_bytes(data[i:i + 4], "big"); typ = data[i + 4:i + 8]; body = data[i + 8:i + 8 + ln]
        if typ == b"IHDR":
            w, h = int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big")
            bpp = {0: 1, 2: 3, 4: 2, 6: 4}[body[9]]
        if typ == b"IDAT": idat += body
        i += 12 + ln
    raw, stride, out, prev = zlib.decompress(idat), w * bpp, bytearray(), bytearray(w * bpp)
    for r in range(h):
        f, line = raw[r * (stride + 1)], bytearray(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0; b = prev[x]; c = prev[x - bpp] if x >= bpp else 0
            if f == 1: line[x] = (line[x] + a) & 255
            elif f == 2: line[x] = (line[x] + b) & 255
            elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line; prev = line
    return bytes(out)
cli, dev = sys.argv[1], sys.argv[2]
def losses(path):
    return [float(l.split()[3]) for l in open(path) if l.startswith("step ") and " loss " in l]
lc, lg = losses("%s/train-cpu.log" % cli), losses("%s/train-%s.log" % (cli, dev))
gap = max([abs(a - b) / abs(a) for a, b in zip(lc, lg)] or [1])
print("commands: dap train, 3 steps, cpu vs %s: losses %s vs %s (largest relative gap %.2g)" % (dev, lc, lg, gap))
if len(lc) != 3 or len(lg) != 3 or gap > 1e-3: sys.exit(1)
worst, count = 0, 0
for kind in ("sample", "distill"):
    for a in sorted(glob.glob("%s/%s-cpu/*/*.png" % (cli, kind))):
        b = a.replace("%s-cpu" % kind, "%s-%s" % (kind, dev))
        pa, pb = png_rows(a), png_rows(b)
        if len(pa) != len(pb): print("commands: %s and %s differ in size" % (a, b)); sys.exit(1)
        worst = max(worst, max(abs(x - y) for x, y in zip(pa, pb))); count += 1
print("commands: %d images from sample and distill, cpu vs %s: largest difference %d grey levels" % (count, dev, worst))
sys.exit(0 if count >= 10 and worst <= 2 else 1)
PY
  fi
  if [ "$ok" = 1 ]; then say "commands passed"; else failed=1; say "the commands FAILED (see $OUT/tests.txt)"; fi
  rm -rf "$cli"
fi

MODEL=$("$BUILD/bench_dit" --config "$CONFIG" --layer "$LAYER" --print-config) || { say "bad CONFIG $CONFIG"; exit 1; }
TRAIN_MODEL=$("$BUILD/bench_dit" --config "$TRAIN_CONFIG" --print-config) || { say "bad TRAIN_CONFIG $TRAIN_CONFIG"; exit 1; }
: > "$OUT/bench.jsonl"
for job in $JOBS; do
  measure=${job%%:*}; prec=${job##*:}
  if [ $(( $(date +%s) - T0 )) -gt "$DEADLINE" ]; then say "$job skipped (past DEADLINE $DEADLINE s)"; continue; fi
  it=$ITERS; case $measure in guide*) it=$(( ITERS + 2 )) ;; esac
  case $measure in convnet3|resnetap10|resnet18) # one evaluation run of the classifier on a random IPC 10 set
    [ -d "$OUT/cnn-set" ] || "$BUILD/dap" distill --data fmnist --method random --ipc 10 --out "$OUT/cnn-set" --quiet 2>> "$OUT/bench.err"
    say "$job: dap ($CNN_EPOCHS epochs, weights resident on the device)"
    OMP_NUM_THREADS=4 timeout 300 "$BUILD/dap" eval --data fmnist --train "$OUT/cnn-set" --arch "$measure" --runs 1 \
      --epochs "$CNN_EPOCHS" --device "$DEVICE" --json "$OUT/cnn-$measure-dap.json" --quiet > /dev/null 2>> "$OUT/bench.err" ||
      say "$job: dap failed: $(tail -1 "$OUT/bench.err")"
    say "$job: dap, the batches assembled on the host (DAP_CUDA_AUG=0)"
    DAP_CUDA_AUG=0 OMP_NUM_THREADS=4 timeout 300 "$BUILD/dap" eval --data fmnist --train "$OUT/cnn-set" --arch "$measure" \
      --runs 1 --epochs "$CNN_EPOCHS" --device "$DEVICE" --json "$OUT/cnn-$measure-dap-hostbatch.json" --quiet > /dev/null \
      2>> "$OUT/bench.err" || say "$job: dap (host batches) failed: $(tail -1 "$OUT/bench.err")"
    say "$job: PyTorch (bench/eval_ref.py)"
    PYTHONUNBUFFERED=1 timeout 300 "$PY" bench/eval_ref.py --train "$OUT/cnn-set" --arch "$measure" --runs 1 --epochs "$CNN_EPOCHS" \
      --device "$DEVICE" --threads 4 --quiet --json "$OUT/cnn-$measure-torch.json" > /dev/null 2>> "$OUT/bench.err" ||
      say "$job: PyTorch failed: $(tail -1 "$OUT/bench.err")"
    "$PY" - "$OUT" "$measure" "$DEVICE" >> "$OUT/bench.jsonl" <<'PY'
import json, os, sys
out, arch, dev = sys.argv[1:4]
for impl, name in (("dap", "dap"), ("dap-hostbatch", "dap-hostbatch"), ("torch", "torch")):
    p = os.path.join(out, "cnn-%s-%s.json" % (arch, name))
    if not os.path.exists(p):
        continue
    r = json.load(open(p))["runs"][0]
    print(json.dumps({"impl": impl, "measure": arch, "precision": "fp32", "device": dev, "throughput": 1.0 / r["seconds"],
                      "unit": "runs/s", "seconds": r["seconds"], "accuracy": r["accuracy"], "peak_device_mb": 0}))
PY
    continue ;;
  vaedec|vaeenc|vaevjp) # the SD VAE (random sd-vae-ft-mse-size weights written by dap)
    m=decode; [ "$measure" = vaeenc ] && m=encode; [ "$measure" = vaevjp ] && m=vjp
    [ -f "$VAE_W" ] || "$BUILD/bench_vae" --save "$VAE_W" 2>> "$OUT/bench.err"
    say "$job: dap ($VAE_BATCH images at $VAE_SIZE px)"
    OMP_NUM_THREADS=$THREADS timeout 200 "$BUILD/bench_vae" --weights "$VAE_W" --measure $m --size "$VAE_SIZE" \
      --batch "$VAE_BATCH" --device "$DEVICE" --warmup 1 --iters "$ITERS" --threads "$THREADS" >> "$OUT/bench.jsonl" 2>> "$OUT/bench.err" ||
      say "$job: dap failed: $(tail -1 "$OUT/bench.err")"
    say "$job: PyTorch (diffusers' AutoencoderKL)"
    PYTHONUNBUFFERED=1 timeout 200 "$PY" bench/vae_torch.py --weights "$VAE_W" --measure $m --size "$VAE_SIZE" \
      --batch "$VAE_BATCH" --device "$DEVICE" --warmup 1 --iters "$ITERS" --threads "$THREADS" >> "$OUT/bench.jsonl" 2>> "$OUT/bench.err" ||
      say "$job: PyTorch failed (diffusers missing?): $(tail -1 "$OUT/bench.err")"
    continue ;;
  esac
  cfg=$CONFIG; model=$MODEL
  [ "$measure" = train ] && cfg=$TRAIN_CONFIG && model=$TRAIN_MODEL
  say "$job: dap ($cfg)"
  OMP_NUM_THREADS=$THREADS timeout 200 "$BUILD/bench_dit" --config "$cfg" --layer "$LAYER" --measure "$measure" \
    --device "$DEVICE" --precision "$prec" --warmup 1 --iters "$it" --threads "$THREADS" >> "$OUT/bench.jsonl" 2>> "$OUT/bench.err" ||
    say "$job: dap failed: $(tail -1 "$OUT/bench.err")"
  say "$job: PyTorch"
  PYTHONUNBUFFERED=1 timeout 200 "$PY" bench/dit_torch.py --model "$model" --config "$cfg" --measure "$measure" \
    --device "$DEVICE" --precision "$prec" --warmup 1 --iters "$it" --threads "$THREADS" >> "$OUT/bench.jsonl" 2>> "$OUT/bench.err" ||
    say "$job: PyTorch failed: $(tail -1 "$OUT/bench.err")"
done

"$PY" - "$OUT" "$CONFIG" <<'PY' | tee -a "$OUT/summary.txt"
import json, os, re, sys
out, config = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(os.path.join(out, "bench.jsonl")) if l.startswith("{")]
by = {(r["impl"], r["measure"], r["precision"]): r for r in rows}
gpu = next((r["device"] for r in rows if r["impl"] == "torch"), None) or next((r["device"] for r in rows), "unknown")
print("%s, %s: throughput (dap / PyTorch eager), peak device MiB (dap / PyTorch)" % (config, gpu))
print("%-9s %-5s %10s %10s %-9s %7s %10s %10s" % ("", "prec", "dap", "PyTorch", "unit", "ratio", "dap MiB", "torch MiB"))
for (impl, m, p), d in sorted(by.items()):
    if impl != "dap":
        continue
    t = by.get(("torch", m, p))
    ratio = "%.2fx" % (d["throughput"] / t["throughput"]) if t else "-"
    print("%-9s %-5s %10.3f %10s %-9s %7s %10.0f %10s" % (
        m, p, d["throughput"], "%.3f" % t["throughput"] if t else "-", d["unit"], ratio,
        d.get("peak_device_mb", 0), "%.0f" % t["peak_device_mb"] if t else "-"))
    if m == "train":
        print("       (%s, batch %d: forward, backward, clipping, AdamW; on a GPU also the EMA)" % (d.get("config"), d.get("batch", 0)))
    h = by.get(("dap-hostbatch", m, p))
    if h:
        print("       the batches assembled on the host instead (DAP_CUDA_AUG=0): %.3f %s, device / host batches %.2fx" % (
            h["throughput"], h["unit"], d["throughput"] / h["throughput"]))
    if m == "ddim":
        print("       50-step CFG sampling: %.3f images/s (dap), %s (PyTorch)" % (
            d["throughput"] / 50, "%.3f" % (t["throughput"] / 50) if t else "-"))
name = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
path = os.path.join("bench", "results", "gpu-%s.json" % name)
doc = {"config": config, "gpu": gpu, "runs": rows}
paths = [os.path.join(out, os.path.basename(path))] + ([path] if gpu != "cpu" else [])  # a dry run stays in OUT
for p in paths:
    with open(p, "w") as f:
        json.dump(doc, f, indent=1)
print("results: %s" % ", ".join(paths))
PY
say "done$([ "$failed" = 1 ] && echo ': the tests FAILED')"
exit "$failed"
