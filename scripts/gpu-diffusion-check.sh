#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, in one run of at most BUDGET seconds (default 430, about 7
# minutes): the DiT on the GPU against the CPU (tests), then its speed against PyTorch eager on
# the same GPU.
#
#   scripts/gpu-diffusion-check.sh                 # there, from the repo root
#   DEVICE=cpu CONFIG=fm-tiny TRAIN_CONFIG=fm-tiny BUILD=build JOBS="fwd32:fp32 guide:fp32 train:fp32" SKIP_TESTS=1 \
#     scripts/gpu-diffusion-check.sh               # here: the plumbing alone, on the CPU
#
# 1. build: $BUILD (default build-cuda) with `make CUDA=1 -j$(nproc)` unless $BUILD/dap,
#    dap_tests, bench_dit and bench_vae are already there (built here and carried:
#    scripts/gpu-bundle.sh pack / setup, below).
# 2. tests: $BUILD/dap_tests cuda (the device choice, the classifiers, every DiT kernel per
#    precision, the DiT's forward / features / backward from block l on a small config and on
#    DiT-XL/2 at batch 1, the memory errors, a CFG DDIM run and a DAP distillation end to
#    end), at most TESTS_MAX (150) seconds, then the commands, at most CMDS_MAX (90) seconds
#    together: a 3-step fm-tiny model trained on a tiny random IDX set with
#    --device cpu and --device $DEVICE (the logged losses compared), then
#    `dap sample` and `dap distill --method dap` with --device cpu and --device $DEVICE, the
#    images compared (at most 2 grey levels apart). The log: $OUT/tests.txt. A failure or a
#    timeout does not stop the run (a lent GPU's minutes are few: the timings come back too)
#    but makes the script exit 1 at the end; STRICT=1 stops.
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
#             batches augmented there) against bench/eval_ref.py (--fmnist: the folder dap reads,
#             /usr/share/datasets/fashion-mnist, else /usr/local/share/..., or FMNIST), and dap
#             with the batches assembled on the host (DAP_CUDA_AUG=0) (also convnet3, resnetap10)
#      vaedec  the SD VAE's decode of VAE_BATCH (8) latents to VAE_SIZE (256) px images, against
#             diffusers' AutoencoderKL (bench/vae_torch.py; needs diffusers), random weights of
#             sd-vae-ft-mse's size written by bench_vae --save (VAE_W); vaeenc: the encode;
#             vaevjp: the decoder's vector-Jacobian product of one latent (igd on a latent
#             prior) against autograd through diffusers' decoder
#    PRECISION bf16: dap's inference DiT with BF16 weights and product inputs against the
#    PyTorch model cast to bfloat16 (dit_torch.py --bf16 cast); train: dap's FP32 master
#    weights with a BF16 copy and BF16 activations against torch.autocast(bfloat16) (FP32
#    weights cast per product). The summary says which, per row.
#    $OUT/bench.jsonl (every JSON line), $OUT/bench.err (the commands' stderr),
#    $OUT/summary.txt (the log, throughputs, dap / PyTorch ratios, peak device memory) and
#    $OUT/gpu-<GPU name>.json, also written to bench/results/.
# Time: every command runs under `timeout`, capped at what is left of BUDGET; a job does not
# start after DEADLINE seconds (default BUDGET - 30) or with under 20 s left. The summary and
# the results JSON are rewritten after every job and on exit (a kill, a failure), so what ran
# comes back. Scratch (the classifier's set, its JSON, the commands' models and images) lives in
# a temporary folder removed at the end: $OUT holds at most 6 files (the device tool returns 8).
# OUT defaults to out/gpu-diffusion (the device tool's $OUT when set). PY: the Python with
# PyTorch (default python3).
#
# On a lent machine that cannot install packages (no OpenBLAS, libpng, libjpeg, diffusers):
#   here:   scripts/gpu-bundle.sh pack .gpu   (the programs for x86-64-v3 in .gpu/build-cuda.tar.xz,
#           the libraries, Fashion-MNIST, the diffusers wheels; .gpu goes into .git/info/exclude)
#   there:  s=$(scripts/gpu-bundle.sh setup .gpu) && eval "$s" && scripts/gpu-diffusion-check.sh
#           (the device tool: carry [".gpu"], timeout_s 480; setup exits 1 if anything is missing)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
failed=0
BUILD=${BUILD:-build-cuda}; DEVICE=${DEVICE:-cuda}; CONFIG=${CONFIG:-DiT-XL/2}; LAYER=${LAYER:-8}
JOBS=${JOBS:-fwd32:fp32 ddim:fp32 guide:fp32 ddim:bf16 guide:bf16 train:fp32 resnet18:fp32 vaedec:fp32 vaevjp:fp32 fwd32:bf16 guidemean:fp32 train:bf16 fwd32:tf32 ddim:tf32 train:tf32}
TRAIN_CONFIG=${TRAIN_CONFIG:-DiT-B/2}
CNN_EPOCHS=${CNN_EPOCHS:-300}
VAE_SIZE=${VAE_SIZE:-256}; VAE_BATCH=${VAE_BATCH:-8}; VAE_W=${VAE_W:-/tmp/dap-bench-vae.safetensors}
OUT=${OUT:-out/gpu-diffusion}; PY=${PY:-python3}; ITERS=${ITERS:-3}
BUDGET=${BUDGET:-430}; DEADLINE=${DEADLINE:-$((BUDGET - 30))}; TESTS_MAX=${TESTS_MAX:-150}; CMDS_MAX=${CMDS_MAX:-90}
THREADS=${THREADS:-$(nproc)}
if [ -z "${FMNIST:-}" ]; then # the folder dap reads (src/data/dataset.c), for bench/eval_ref.py
  for d in /usr/share/datasets/fashion-mnist /usr/local/share/datasets/fashion-mnist; do
    [ -f "$d/train-images-idx3-ubyte.gz" ] && { FMNIST=$d; break; }
  done
fi
mkdir -p "$OUT"
T0=$(date +%s); END=$((T0 + BUDGET))
W=$(mktemp -d "${TMPDIR:-/tmp}/gpu-diffusion-check.XXXXXX") # scratch, removed on exit
LOG=$W/log.txt; : > "$LOG"; : > "$OUT/summary.txt"
note() { echo "$*"; echo "$*" >> "$LOG"; echo "$*" >> "$OUT/summary.txt"; }
say() { note "gpu-diffusion-check: t=$(( $(date +%s) - T0 )) s  $*"; }
# tmo CAP CMD...: CMD under a timeout of CAP seconds or of what is left before END, the smaller;
# in the background and waited for, so that a signal's trap runs at once (and stops it)
TMO_PID=""
tmo() {
  local cap=$1 left rc; shift
  left=$(( END - $(date +%s) )); [ "$left" -lt "$cap" ] && cap=$left
  [ "$cap" -ge 1 ] || { echo "gpu-diffusion-check: no time left for ${1##*/} ${2:-}" >&2; return 124; }
  timeout -k 10 "$cap" "$@" & TMO_PID=$!
  wait "$TMO_PID"; rc=$?; TMO_PID=""
  return "$rc"
}
timed_out() { [ "$1" = 124 ] || [ "$1" = 137 ]; }
# why STATUS: a failed command's reason for the log
why() { if timed_out "$1"; then echo "timed out (exit $1)"; else echo "exit $1: $(tail -1 "$OUT/bench.err" | cut -c1-200)"; fi; }

cat > "$W/summary.py" <<'PY'
import json, os, re, sys
out, config = sys.argv[1], sys.argv[2]
p = os.path.join(out, "bench.jsonl")
rows = []
for l in (open(p) if os.path.exists(p) else []):
    if l.startswith("{"):
        try:
            rows.append(json.loads(l))
        except ValueError:  # a line cut short by a kill
            pass
if not rows:
    print("no benchmark results yet")
    sys.exit(0)
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
    if p == "bf16":  # what each side stored in BF16, as far as the JSON lines say
        mode = (t or {}).get("bf16")
        torch_side = {"cast": "the model and its input cast to bfloat16", "autocast": "torch.autocast(bfloat16), FP32 weights"}
        print("       bf16: dap %s; PyTorch %s" % (
            "FP32 master weights, a BF16 copy and BF16 activations" if m == "train" else "BF16 weights and product inputs",
            torch_side.get(mode, "bf16 (mode not recorded)") if t else "not run"))
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
    os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
    with open(p + ".part", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(p + ".part", p)
print("results: %s" % ", ".join(paths))
PY
# summarise [show]: $OUT/summary.txt = the log so far and the table; the results JSON
summarise() {
  timeout 60 "$PY" "$W/summary.py" "$OUT" "$CONFIG" > "$W/table.txt" 2>&1
  cat "$LOG" "$W/table.txt" > "$OUT/summary.txt"
  [ "${1:-}" = show ] && cat "$W/table.txt"
  return 0
}
finish() {
  local rc=$?
  trap - EXIT; trap '' INT TERM
  [ "$rc" = 0 ] && rc=$failed
  summarise show
  if [ "$rc" = 0 ]; then say "done"
  elif [ "$failed" = 1 ]; then say "done: the tests FAILED (exit $rc)"
  else say "stopped (exit $rc)"; fi
  rm -rf "$W"
  exit "$rc"
}
trap finish EXIT
exec 8>&1 9>&2 # the script's own stdout / stderr, for a trap that runs inside a redirected tmo
on_signal() { # the command running (a timeout process: it passes the signal on), then finish
  trap '' INT TERM; exec 1>&8 2>&9
  for p in ${TMO_PID:-} ${SUB_PID:-}; do kill -TERM "$p" 2>/dev/null; done
  say "stopped by a signal"; exit 143
}
trap on_signal INT TERM
say "budget $BUDGET s (jobs start until $DEADLINE s); Fashion-MNIST: ${FMNIST:-not found}"

if [ ! -x "$BUILD/dap" ] || [ ! -x "$BUILD/dap_tests" ] || [ ! -x "$BUILD/bench_dit" ] || [ ! -x "$BUILD/bench_vae" ]; then
  say "building $BUILD"
  flags=""; [ "$BUILD" = build-cuda ] && flags="CUDA=1"
  tmo "$BUDGET" make $flags -j"$(nproc)" all "$BUILD/bench_dit" "$BUILD/bench_vae" > "$OUT/build.txt" 2>&1 ||
    { say "the build failed (see $OUT/build.txt)"; tail -20 "$OUT/build.txt"; exit 1; }
fi
[ -f "$BUILD/build-info.txt" ] && note "$(sed 's/^/build: /' "$BUILD/build-info.txt")"
command -v nvidia-smi >/dev/null && note "$(timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)"

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  say "tests (at most $TESTS_MAX s)"
  tmo "$TESTS_MAX" env OMP_NUM_THREADS="$THREADS" "$BUILD/dap_tests" device_select cuda > "$OUT/tests.txt" 2>&1; trc=$?
  grep -E "^(ok|FAIL|SKIP) |skipped|max rel|^[0-9]+ passed" "$OUT/tests.txt" | tail -60
  if timed_out "$trc"; then
    failed=1; say "the CUDA tests TIMED OUT (exit $trc; the last line: $(tail -1 "$OUT/tests.txt" | cut -c1-200))"
    [ "${STRICT:-0}" = 1 ] && exit 1
  elif grep -qE "^SKIP cuda|skipped:" "$OUT/tests.txt" && [ "$DEVICE" = cuda ]; then say "the CUDA tests were skipped: no usable GPU"; exit 1
  elif grep -q "^[0-9]* passed, 0 failed" "$OUT/tests.txt"; then say "tests passed"
  else
    failed=1; say "the CUDA tests FAILED: $(grep -E '^FAIL' "$OUT/tests.txt" | tr '\n' ' ') (exit $trc; see $OUT/tests.txt)"
    [ "${STRICT:-0}" = 1 ] && exit 1
  fi
fi

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  say "commands: train, sample and distill on cpu and $DEVICE (at most $CMDS_MAX s)"
  cli=$W/cli; mkdir -p "$cli"
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
  END_ALL=$END; [ $(( $(date +%s) + CMDS_MAX )) -lt "$END" ] && END=$(( $(date +%s) + CMDS_MAX ))
  # a subshell: its `exit` (the first failure, with that command's status) ends the commands alone
  ( for dev in cpu "$DEVICE"; do # the same 3 training steps on both (the log's losses compared below)
      tmo "$CMDS_MAX" "$DAPB" train --data "$D" --config fm-tiny --steps 3 --batch 8 --val-per-class 0 --ckpt-every 3 --log-every 1 \
        --device "$dev" --out "$cli/m-$dev.safetensors" --threads "$THREADS" > "$cli/train-$dev.log" || exit
    done
    cp "$cli/m-cpu.safetensors" "$cli/m.safetensors" || exit
    for dev in cpu "$DEVICE"; do
      tmo "$CMDS_MAX" "$DAPB" sample --model "$cli/m.safetensors" --classes 0,3 --n 3 --steps 4 --cfg 2 --batch 4 --device "$dev" \
        --out "$cli/sample-$dev" || exit
      tmo "$CMDS_MAX" "$DAPB" distill --data "$D" --model "$cli/m.safetensors" --method dap --ipc 2 --steps 4 --n-real 4 --layer 1 \
        --gamma 0.1 --classes 0,1 --device "$dev" --quiet --out "$cli/distill-$dev" || exit
    done ) >> "$OUT/tests.txt" 2>&1 &
  SUB_PID=$!; wait "$SUB_PID"; crc=$?; SUB_PID=""
  END=$END_ALL
  [ "$crc" = 0 ] || ok=0
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
  if [ "$ok" = 1 ]; then say "commands passed"
  elif timed_out "$crc"; then failed=1; say "the commands TIMED OUT (at most $CMDS_MAX s; see $OUT/tests.txt)"
  else failed=1; say "the commands FAILED (see $OUT/tests.txt)"; fi
  [ "$ok" = 1 ] || [ "${STRICT:-0}" != 1 ] || exit 1
fi

MODEL=$(tmo 60 "$BUILD/bench_dit" --config "$CONFIG" --layer "$LAYER" --print-config) || { say "bad CONFIG $CONFIG"; exit 1; }
TRAIN_MODEL=$(tmo 60 "$BUILD/bench_dit" --config "$TRAIN_CONFIG" --print-config) || { say "bad TRAIN_CONFIG $TRAIN_CONFIG"; exit 1; }
: > "$OUT/bench.jsonl"; : > "$OUT/bench.err"
fm=(); [ -n "${FMNIST:-}" ] && fm=(--fmnist "$FMNIST")
# run_job MEASURE:PRECISION: both sides of one JOBS entry, their JSON lines into bench.jsonl
run_job() {
  local job=$1 measure=${1%%:*} prec=${1##*:} it=$ITERS m cfg model
  case $measure in guide*) it=$(( ITERS + 2 )) ;; esac
  case $measure in convnet3|resnetap10|resnet18) # one evaluation run of the classifier on a random IPC 10 set
    [ -d "$W/cnn-set" ] || tmo 60 "$BUILD/dap" distill --data fmnist --method random --ipc 10 --out "$W/cnn-set" --quiet 2>> "$OUT/bench.err"
    say "$job: dap ($CNN_EPOCHS epochs, weights resident on the device)"
    tmo 300 env OMP_NUM_THREADS=4 "$BUILD/dap" eval --data fmnist --train "$W/cnn-set" --arch "$measure" --runs 1 \
      --epochs "$CNN_EPOCHS" --device "$DEVICE" --json "$W/cnn-$measure-dap.json" --quiet > /dev/null 2>> "$OUT/bench.err" ||
      say "$job: dap failed: $(why $?)"
    say "$job: dap, the batches assembled on the host (DAP_CUDA_AUG=0)"
    tmo 300 env DAP_CUDA_AUG=0 OMP_NUM_THREADS=4 "$BUILD/dap" eval --data fmnist --train "$W/cnn-set" --arch "$measure" \
      --runs 1 --epochs "$CNN_EPOCHS" --device "$DEVICE" --json "$W/cnn-$measure-dap-hostbatch.json" --quiet > /dev/null \
      2>> "$OUT/bench.err" || say "$job: dap (host batches) failed: $(why $?)"
    say "$job: PyTorch (bench/eval_ref.py)"
    tmo 300 env PYTHONUNBUFFERED=1 "$PY" bench/eval_ref.py --train "$W/cnn-set" ${fm[@]+"${fm[@]}"} --arch "$measure" --runs 1 \
      --epochs "$CNN_EPOCHS" --device "$DEVICE" --threads 4 --quiet --json "$W/cnn-$measure-torch.json" > /dev/null 2>> "$OUT/bench.err" ||
      say "$job: PyTorch failed: $(why $?)"
    "$PY" - "$W" "$measure" "$DEVICE" >> "$OUT/bench.jsonl" <<'PY'
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
    return ;;
  vaedec|vaeenc|vaevjp) # the SD VAE (random sd-vae-ft-mse-size weights written by dap)
    m=decode; [ "$measure" = vaeenc ] && m=encode; [ "$measure" = vaevjp ] && m=vjp
    [ -f "$VAE_W" ] || tmo 120 "$BUILD/bench_vae" --save "$VAE_W" 2>> "$OUT/bench.err"
    say "$job: dap ($VAE_BATCH images at $VAE_SIZE px)"
    tmo 200 env OMP_NUM_THREADS="$THREADS" "$BUILD/bench_vae" --weights "$VAE_W" --measure $m --size "$VAE_SIZE" \
      --batch "$VAE_BATCH" --device "$DEVICE" --warmup 1 --iters "$ITERS" --threads "$THREADS" >> "$OUT/bench.jsonl" 2>> "$OUT/bench.err" ||
      say "$job: dap failed: $(why $?)"
    say "$job: PyTorch (diffusers' AutoencoderKL)"
    tmo 200 env PYTHONUNBUFFERED=1 "$PY" bench/vae_torch.py --weights "$VAE_W" --measure $m --size "$VAE_SIZE" \
      --batch "$VAE_BATCH" --device "$DEVICE" --warmup 1 --iters "$ITERS" --threads "$THREADS" >> "$OUT/bench.jsonl" 2>> "$OUT/bench.err" ||
      say "$job: PyTorch failed (diffusers missing?): $(why $?)"
    return ;;
  esac
  cfg=$CONFIG; model=$MODEL
  [ "$measure" = train ] && cfg=$TRAIN_CONFIG && model=$TRAIN_MODEL
  say "$job: dap ($cfg)"
  tmo 200 env OMP_NUM_THREADS="$THREADS" "$BUILD/bench_dit" --config "$cfg" --layer "$LAYER" --measure "$measure" \
    --device "$DEVICE" --precision "$prec" --warmup 1 --iters "$it" --threads "$THREADS" >> "$OUT/bench.jsonl" 2>> "$OUT/bench.err" ||
    say "$job: dap failed: $(why $?)"
  say "$job: PyTorch"
  tmo 200 env PYTHONUNBUFFERED=1 "$PY" bench/dit_torch.py --model "$model" --config "$cfg" --measure "$measure" \
    --device "$DEVICE" --precision "$prec" --warmup 1 --iters "$it" --threads "$THREADS" >> "$OUT/bench.jsonl" 2>> "$OUT/bench.err" ||
    say "$job: PyTorch failed: $(why $?)"
}
for j in $JOBS; do
  now=$(date +%s)
  if [ $((now - T0)) -gt "$DEADLINE" ] || [ $((END - now)) -lt 20 ]; then
    say "$j skipped (past DEADLINE $DEADLINE s or under 20 s of BUDGET $BUDGET s left)"; continue
  fi
  run_job "$j"
  summarise
done
# finish (the EXIT trap): the summary's table, the results JSON, the exit status
