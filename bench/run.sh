#!/usr/bin/env bash
# bench/run.sh: dap vs the PyTorch peer on the DiT workloads; prints a table of
# throughputs, ratios (dap / PyTorch) and peak memory, and writes the raw numbers to
# bench/results/<config>.json. Every measurement runs in its own process (peak RSS).
#
#   bash bench/run.sh [--config fm-p4-h256-d8|fm-p4-h384-d12|fm-p2-h256-d8|fm-tiny]
#                     [--iters 5] [--warmup 1] [--light-iters 7] [--threads 2]
#                     [--policies "default passive"]   (OMP_WAIT_POLICY values, both sides)
#                     [--out bench/results/NAME.json]
# `make bench` runs it with the defaults. Timings are medians over --iters timed
# iterations after --warmup untimed ones (guide and cfg10 are cheap: --light-iters).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/blas-env.sh

CONFIG=fm-p4-h256-d8 ITERS=5 WARMUP=1 LIGHT_ITERS=7 THREADS=2 POLICIES="default passive" OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --config) CONFIG=$2 ;;
        --iters) ITERS=$2 ;;
        --warmup) WARMUP=$2 ;;
        --light-iters) LIGHT_ITERS=$2 ;;
        --threads) THREADS=$2 ;;
        --policies) POLICIES=$2 ;;
        --out) OUT=$2 ;;
        *) echo "bench/run.sh: unknown flag $1" >&2; exit 2 ;;
    esac
    shift 2
done
OUT=${OUT:-bench/results/$CONFIG.json}
BIN=${BUILD:-build}/bench_dit
PY=/usr/bin/python3
[ -x "$BIN" ] || make --no-print-directory -j2 "$BIN" >/dev/null
mkdir -p "$(dirname "$OUT")"

MODEL=$("$BIN" --config "$CONFIG" --print-config)
LINES=$(mktemp)
trap 'rm -f "$LINES"' EXIT
echo "bench: $CONFIG $MODEL, $THREADS threads, warmup $WARMUP, iters $ITERS (light $LIGHT_ITERS)" >&2

# OMP_WAIT_POLICY: "default" leaves it unset (libgomp spins a while before sleeping),
# other values are exported; both sides run under each (PyTorch uses libgomp too).
run_env() {
    local pol=$1
    shift
    if [ "$pol" = default ]; then
        env -u OMP_WAIT_POLICY OMP_NUM_THREADS="$THREADS" timeout 600 "$@"
    else
        env OMP_WAIT_POLICY="$pol" OMP_NUM_THREADS="$THREADS" timeout 600 "$@"
    fi
}
for m in train ddim guide cfg10; do
    it=$ITERS
    case $m in guide | cfg10) it=$LIGHT_ITERS ;; esac
    for pol in $POLICIES; do
        echo "  $m, OMP_WAIT_POLICY=$pol: dap" >&2
        run_env "$pol" "$BIN" --config "$CONFIG" --measure $m --warmup "$WARMUP" --iters "$it" \
            --threads "$THREADS" >>"$LINES"
        echo "  $m, OMP_WAIT_POLICY=$pol: torch" >&2
        run_env "$pol" "$PY" bench/dit_torch.py --model "$MODEL" --config "$CONFIG" --measure $m \
            --warmup "$WARMUP" --iters "$it" --threads "$THREADS" >>"$LINES"
    done
done

"$PY" - "$LINES" "$OUT" "$CONFIG" "$POLICIES" <<'EOF'
import json, platform, sys, time
lines, out, config, policies = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
runs = [json.loads(l) for l in open(lines) if l.strip()]
def get(impl, m, pol):
    return next(r for r in runs if r["impl"] == impl and r["measure"] == m and r["omp_wait_policy"] == pol)
def best(impl, m):
    return max((get(impl, m, p) for p in policies), key=lambda r: r["throughput"])
def tag(p):
    return "" if p == "default" else "(%s)" % p
label = {"train": "train step, batch 64", "ddim": "DDIM+CFG step, batch 100",
         "guide": "dap guidance, 100 real + 10 syn", "cfg10": "DDIM+CFG step, batch 10"}
MS = ["train", "ddim", "guide", "cfg10"]

print("throughput (median), %s, OMP_WAIT_POLICY as given" % config)
cols = [(i, p) for p in policies for i in ("dap", "torch")]
head = "%-32s %-9s" % ("measurement", "unit") + "".join("%18s" % ((i if i == "dap" else "PyTorch") + tag(p)) for i, p in cols)
print(head + "\n" + "-" * len(head))
for m in MS:
    print("%-32s %-9s" % (label[m], get("torch", m, policies[0])["unit"])
          + "".join("%18.3f" % get(i, m, p)["throughput"] for i, p in cols))
busy = [r for r in runs if r["foreign_cpu"] > 0.05]
for r in busy:
    print("  warning: %s %s (OMP_WAIT_POLICY=%s) ran while other processes used %.0f%% of the cores"
          % (r["impl"], r["measure"], r["omp_wait_policy"], 100 * r["foreign_cpu"]))
print("  max share of the cores used by other processes during a timed loop: %.1f%%"
      % (100 * max(r["foreign_cpu"] for r in runs)))

print("\nratio dap / PyTorch (> 1: dap faster); peak RSS of the measuring process (best runs)")
head = "%-32s" % "measurement" + "".join("%16s" % ("ratio" + tag(p)) for p in policies) + "%14s" % "best vs best" \
    + "%10s" % "MB dap" + "%12s" % "MB PyTorch"
print(head + "\n" + "-" * len(head))
table = []
for m in MS:
    bd, bt = best("dap", m), best("torch", m)
    row = {"measurement": m, "label": label[m], "unit": bd["unit"],
           "dap_best": bd["throughput"], "dap_best_policy": bd["omp_wait_policy"],
           "torch_best": bt["throughput"], "torch_best_policy": bt["omp_wait_policy"],
           "ratio_best": bd["throughput"] / bt["throughput"],
           "dap_peak_rss_mb": bd["peak_rss_mb"], "torch_peak_rss_mb": bt["peak_rss_mb"],
           "torch_base_rss_mb": bt["base_rss_mb"]}
    for p in policies:
        d, t = get("dap", m, p), get("torch", m, p)
        row["dap_" + p], row["torch_" + p] = d["throughput"], t["throughput"]
        row["ratio_" + p] = d["throughput"] / t["throughput"]
    table.append(row)
    print("%-32s" % label[m] + "".join("%16.2f" % row["ratio_" + p] for p in policies)
          + "%14.2f" % row["ratio_best"] + "%10.0f" % bd["peak_rss_mb"] + "%12.0f" % bt["peak_rss_mb"])

# the guidance's cost in unguided steps at the same synthetic batch: a guided DDIM step
# costs (1 + this) unguided ones
print("\nguidance / unguided DDIM+CFG step at batch 10 (median times)")
over = {}
for i in ("dap", "torch"):
    for p in policies:
        g, c = get(i, "guide", p), get(i, "cfg10", p)
        over[i + tag(p)] = g["median_s"] / c["median_s"]
        print("  %-18s %.2fx  (%.4f s / %.4f s)" % (i + tag(p), over[i + tag(p)], g["median_s"], c["median_s"]))
t0 = get("torch", "train", policies[0])
print("\nPyTorch %s; its process RSS after import, before the model: %.0f MB" % (t0["torch"], t0["base_rss_mb"]))
res = {"config": config, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(),
       "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
       "policies": policies, "table": table, "guidance_over_cfg10": over, "runs": runs}
with open(out, "w") as f:
    json.dump(res, f, indent=1)
print("wrote", out)
EOF
