#!/usr/bin/env bash
# The prepared device check: one command, at most 8 minutes on one H100/H200, run from the project's
# root. It is tuned to no result: it prints what the GPU does with today's code.
#
#   bash benchmarks/gpu_check.sh                  # the GPU check (--device=cuda, under 8 minutes)
#   bash benchmarks/gpu_check.sh --dry            # the same steps on the CPU, tiny budgets (~1-2 min)
#   bash benchmarks/gpu_check.sh --template=PATH  # the reference template's experiment.py (or $TEMPLATE)
#
# Preparing a GPU machine. It receives the working tree only, not ../shared, so copy the reference
# template into an ignored folder first (never into a tracked file), from a checkout:
#   mkdir -p .gpu/reference-template && cp ../shared/reference-template/experiment.py .gpu/reference-template/
#   grep -qx /.gpu/ .git/info/exclude || echo /.gpu/ >> .git/info/exclude
# then send .gpu along with the tree (the device tool's carry: [".gpu"]) and run `bash benchmarks/gpu_check.sh`
# there. The template is looked for at $TEMPLATE or --template, else .gpu/reference-template/experiment.py,
# else ../shared/reference-template/experiment.py. The machine needs torch with CUDA, numpy, scipy and,
# for the template, einops.
#
# Steps (each under `timeout`, within one deadline of 470 s, so the whole stays under 8 minutes):
#   0. the machine: nvidia-smi -L, python, torch, the device's name.
#   1. correctness: x_plus_y and permutation, 2 seeds x 300 updates, with --jobs=1 and with --jobs=2;
#      each run's output contract (final_info.json: per dataset exactly means, stderrs,
#      final_info_dict; all_results.npy: exactly {dataset}_{seed}_final_info/_train_info/_val_info per
#      unit, a record every eval_every updates), then jobs 1 against 2 value by value (on the CPU they
#      must be identical; on CUDA the max |difference| is printed), and each unit's forward path.
#   2. side by side: benchmarks/side_by_side.py, the reference template and ours on the same GPU,
#      2 units x 1500 updates, wall time of each whole process (skipped with a line if no template).
#   3. the whole baseline: 12 units x 7500 updates, given what is left of the deadline; its wall time
#      and, finished or not, each finished unit's steps to 99% val accuracy beside run_0's
#      (grokstats' censoring-aware summaries and its verdict against run_0).
# --dry runs the same steps on the CPU (CUDA hidden) with tiny budgets: 20 updates, 1 seed, no compile;
# step 2 with 1 unit (template absent: ours alone, --skip_template); step 3 with 2 units. Its
# comparison with run_0 then says "not comparable" but runs. tests/test_gpu_check.py runs it.
#
# Output: stdout, also kept in $OUT/gpu_check.log, with the runs' folders and logs under $OUT (else
# /tmp/gpu-out). The last line is "gpu_check: pass" or "gpu_check: FAIL (...)"; the exit status is 1
# when a contract check, an identity check or a tool failed (after all steps ran), 2 for a bad flag.
# Afterwards commit its output under benchmarks/: $OUT/gpu_check.log as benchmarks/gpu_check.log,
# and a dated section in benchmarks/README.md (machine, date, commit) with the side-by-side table,
# the baseline's wall time and its steps-to-99% table. The run folders stay out of git.
set -u
export PYTHONUNBUFFERED=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
DRY=0
for arg in "$@"; do
  case $arg in
    --dry) DRY=1 ;;
    --template=*) TEMPLATE=${arg#--template=} ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$arg'; allowed: --dry, --template=PATH, --help" >&2; exit 2 ;;
  esac
done
if [ -z "${TEMPLATE:-}" ]; then
  TEMPLATE=$ROOT/.gpu/reference-template/experiment.py
  [ -f "$TEMPLATE" ] || TEMPLATE=$ROOT/../shared/reference-template/experiment.py
fi
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
cd "$ROOT" || exit 1

if [ "$DRY" = 1 ]; then
  export CUDA_VISIBLE_DEVICES=""  # every program, the template's too, on the CPU
  DEVICE=cpu; BUDGET=600; CHECK_T=150; SBS_T=150
  CHECK_SEEDS=1; CHECK_STEPS=20; CHECK_EXTRA=(--compile=false)
  SBS=(--datasets=x_plus_y --updates=20)
  BASE=(--datasets=x_div_y,x_minus_y --num_seeds=1 --total_steps=20 --compile=false); BASE_UNITS=2
else
  DEVICE=cuda; BUDGET=470; CHECK_T=60; SBS_T=130
  CHECK_SEEDS=2; CHECK_STEPS=300; CHECK_EXTRA=()
  SBS=(--updates=1500)
  BASE=(); BASE_UNITS=12
fi
FAILED=()
step() { echo; echo "== $* ($(date +%T), ${SECONDS}s)"; }
left() { local s=$((BUDGET - SECONDS - $1)); echo $((s > 1 ? s : 1)); }  # to the deadline, less a reserve
fail() { FAILED+=("$1"); echo "FAIL: $1"; }

# The checks, as Python run under `timeout`: argv = folder datasets num_seeds total_steps eval_every
read -r -d '' CONTRACT <<'PY'
import json, sys
from pathlib import Path
import numpy as np
folder, datasets, seeds, total, every = Path(sys.argv[1]), sys.argv[2].split(","), *map(int, sys.argv[3:])
bad = []
try:
    info = json.loads((folder / "final_info.json").read_text())
    if sorted(info) != sorted(datasets):
        bad.append(f"final_info.json datasets {sorted(info)}, expected {sorted(datasets)}")
    bad += [f"final_info.json[{d}] keys {list(e)}" for d, e in info.items()
            if list(e) != ["means", "stderrs", "final_info_dict"]]
except (OSError, ValueError) as e:
    bad.append(f"final_info.json unreadable ({type(e).__name__}: {e})")
try:
    results = np.load(folder / "all_results.npy", allow_pickle=True).item()
    parts = ("final_info", "train_info", "val_info")
    expected = {f"{d}_{s}_{p}" for d in datasets for s in range(seeds) for p in parts}
    if set(results) != expected:
        bad.append(f"all_results.npy keys: missing {sorted(expected - set(results))}, "
                   f"unexpected {sorted(set(results) - expected, key=str)}")
    steps = list(range(every, total + 1, every))
    for d in datasets:
        for s in range(seeds):
            train, val = results.get(f"{d}_{s}_train_info", []), results.get(f"{d}_{s}_val_info", [])
            if [r.get("step") for r in train] != steps or [r.get("step") for r in val] != steps:
                bad.append(f"{d}_{s}: records not at steps {every}, {2 * every}, ..., {total}")
            final = results.get(f"{d}_{s}_final_info") or {}
            if val and final.get("final_val_acc") != val[-1].get("val_accuracy"):
                bad.append(f"{d}_{s}: final_val_acc is not the last record's val_accuracy")
except Exception as e:  # missing, truncated or not a dict: the contract is broken either way
    bad.append(f"all_results.npy unreadable ({type(e).__name__}: {e})")
print(f"contract {folder.name}: " + ("ok" if not bad else "BROKEN"))
for line in bad:
    print("  " + line)
sys.exit(1 if bad else 0)
PY

# argv = folder_a folder_b strict (1: identical required)
read -r -d '' SAME_CURVES <<'PY'
import json, math, numbers, sys
import numpy as np
a_dir, b_dir, strict = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
for folder in (a_dir, b_dir):
    try:
        paths = json.load(open(f"{folder}/run_info.json"))["forward_path"]
        print(f"forward_path {folder.rsplit('/', 1)[-1]}: " + ", ".join(f"{u} {p}" for u, p in sorted(paths.items())))
    except (OSError, ValueError, KeyError) as e:
        print(f"forward_path {folder}: unreadable ({type(e).__name__})")
try:
    a, b = (np.load(f"{f}/all_results.npy", allow_pickle=True).item() for f in (a_dir, b_dir))
except Exception as e:  # a run that failed: already reported by its contract check
    sys.exit(print(f"jobs 1 vs 2: not compared ({type(e).__name__})") or 1)
number = lambda t: isinstance(t, numbers.Real) and not isinstance(t, bool)
worst, count, shape, values = 0.0, 0, [], []  # shape: keys or record counts; values: None / NaN vs a number
for key in sorted(set(a) | set(b), key=str):
    x, y = a.get(key), b.get(key)
    pairs = list(zip(x, y)) if isinstance(x, list) and isinstance(y, list) and len(x) == len(y) else [(x, y)]
    for rx, ry in pairs:
        if not (isinstance(rx, dict) and isinstance(ry, dict) and rx.keys() == ry.keys()):
            shape.append(str(key)); break
        for k, u in rx.items():
            v = ry[k]
            if number(u) and number(v) and not (math.isnan(u) or math.isnan(v)):
                worst, count = max(worst, abs(float(u) - float(v))), count + 1
            elif not (u is v is None or (number(u) and number(v) and math.isnan(u) and math.isnan(v))):
                values.append(f"{key}.{k}")
same = not shape and not values and worst == 0
print("jobs 1 vs 2: " + ("identical" if same else "DIFFERENT" if shape or strict else "differ") +
      f" ({count} recorded values, max |difference| {worst:.3g}" +
      (f"; None/NaN against a number at {len(values)}: {', '.join(values[:3])}" if values else "") +
      (f"; other keys or record counts at {', '.join(shape[:3])}" if shape else "") + ")")
sys.exit(1 if shape or (strict and not same) else 0)
PY

# argv = ours run_0; grokstats from the project's root (the working directory)
read -r -d '' VERSUS_RUN_0 <<'PY'
import json, sys
from pathlib import Path
import grokstats
RUN_ONLY = {"out_dir", "device", "jobs", "threads", "overwrite", "resume", "description", "launcher",
            "retries", "compile", "fast_forward", "eval_batch_size"}  # where and how fast, not what

def units(folder):
    """{dataset: [comparison unit]}: all_results.npy when finished, else the finished units' files."""
    try:
        return grokstats.run_units(folder)
    except ValueError:
        total = json.loads((folder / "config.json").read_text())["total_steps"]
        found = {}
        for path in sorted((folder / "units").glob("*.json")):
            u = json.loads(path.read_text())
            diverged = bool((u.get("final_info") or {}).get("diverged"))
            found.setdefault(u["dataset"], []).append(
                grokstats.comparison_unit(u["train_info"], u["val_info"], total, diverged))
        return found

ours_dir, base_dir = Path(sys.argv[1]), Path(sys.argv[2])
configs = [json.loads((f / "config.json").read_text()) for f in (ours_dir, base_dir)]
keys = [k for k in sorted(set(configs[0]) | set(configs[1])) if k not in RUN_ONLY and not k.startswith("slurm_")]
differ = [f"{k} {configs[0][k]} vs {configs[1][k]}" for k in keys
          if k in configs[0] and k in configs[1] and configs[0][k] != configs[1][k]]
newer = [k for k in keys if (k in configs[0]) != (k in configs[1])]  # options added since: at their defaults
walls = []
for f in (ours_dir, base_dir):
    try:
        info = json.loads((f / "run_info.json").read_text())
        walls.append(f"{info['wall_time_s']:.0f} s on {info['device']} x {info['jobs']} jobs")
    except (OSError, ValueError, KeyError):
        walls.append("not finished")
print(f"wall time: ours {walls[0]}; {base_dir.name} {walls[1]}")
print(f"steps to 99% vs {base_dir.name}: " + ("comparable (same experiment config)" if not differ
      else "not comparable (" + "; ".join(differ) + ")")
      + (f"; options in one config only: {', '.join(newer)}" if newer else ""))
ours, base = units(ours_dir), units(base_dir)
seeds = lambda us: ", ".join(str(u["time"]) if u["observed"] else f"never ({u['time']})" for u in us) or "-"
text = lambda us: grokstats.grok_steps_summary([(u["time"], u["observed"]) for u in us])["text"] if us else "-"
print(f"| dataset | ours: per seed | ours | {base_dir.name}: per seed | {base_dir.name} | verdict |")
print("|---|---|---|---|---|---|")
for d in sorted(set(ours) | set(base)):
    o, b = ours.get(d, []), base.get(d, [])
    verdict = grokstats.compare_to_baseline(b, o, base_dir.name)["steps"]["verdict"] if o and b else "-"
    print(f"| {d} | {seeds(o)} | {text(o)} | {seeds(b)} | {text(b)} | {verdict} |")
print("comparison: done")
PY

main() {
  local rc j
  echo "gpu_check: mode $([ "$DRY" = 1 ] && echo "dry (cpu, tiny budgets)" || echo "gpu (cuda)"); out $OUT; template $TEMPLATE"
  local commit; commit=$(git rev-parse --short HEAD 2>/dev/null) || commit=unknown
  [ "$commit" = unknown ] || git diff --quiet HEAD 2>/dev/null || commit="$commit (working tree differs)"
  echo "commit: $commit"

  step "0. the machine"
  command -v nvidia-smi >/dev/null && nvidia-smi -L 2>&1 | head -3 || echo "nvidia-smi: absent"
  timeout -k 5 60 "$PY" -c "import os, sys, torch
cuda = torch.cuda.is_available()
print('python', sys.version.split()[0], '| torch', torch.__version__, '| cpu_count', os.cpu_count(),
      '| device', torch.cuda.get_device_name(0) if cuda else 'cpu')
sys.exit(0 if cuda or '$DEVICE' == 'cpu' else 3)"
  rc=$?
  if [ "$rc" = 3 ]; then echo "gpu_check.sh: no CUDA device here; on a CPU machine run --dry" >&2; return 1; fi
  [ "$rc" = 0 ] || fail "step 0: python/torch probe exited $rc"
  "$PY" -c "import numpy, scipy, einops" 2>&1 | tail -n1

  local check=(--datasets=x_plus_y,permutation --num_seeds="$CHECK_SEEDS" --total_steps="$CHECK_STEPS" \
               --eval_every=10 "${CHECK_EXTRA[@]}")
  step "1. correctness on $DEVICE: ${check[*]}, --jobs=1 vs --jobs=2"
  for j in 1 2; do
    timeout -k 10 "$CHECK_T" "$PY" experiment.py --out_dir="$OUT/check_jobs$j" --device="$DEVICE" --jobs=$j \
      --overwrite "${check[@]}" >"$OUT/check_jobs$j.out" 2>"$OUT/check_jobs$j.err"
    rc=$?; echo "jobs=$j rc: $rc, $(tail -n1 "$OUT/check_jobs$j.out")"
    [ "$rc" = 0 ] || { tail -n3 "$OUT/check_jobs$j.err"; fail "step 1: experiment.py --jobs=$j exited $rc"; }
    timeout -k 5 60 "$PY" -c "$CONTRACT" "$OUT/check_jobs$j" x_plus_y,permutation "$CHECK_SEEDS" "$CHECK_STEPS" 10 \
      || fail "step 1: the contract of --jobs=$j"
  done
  timeout -k 5 60 "$PY" -c "$SAME_CURVES" "$OUT/check_jobs1" "$OUT/check_jobs2" "$([ "$DEVICE" = cpu ] && echo 1 || echo 0)" \
    || fail "step 1: jobs 1 vs 2"

  step "2. side by side on $DEVICE: the reference template and ours, ${SBS[*]}"
  local skip=()
  if [ ! -f "$TEMPLATE" ]; then
    echo "side_by_side: reference template skipped, no file at $TEMPLATE (see the header: .gpu/); ours alone"
    skip=(--skip_template)
  fi
  timeout -k 10 "$(( $(left 60) < SBS_T ? $(left 60) : SBS_T ))" "$PY" benchmarks/side_by_side.py \
    --template="$TEMPLATE" "${SBS[@]}" "${skip[@]}" >"$OUT/side_by_side.out" 2>&1
  rc=$?; tail -n 8 "$OUT/side_by_side.out"; echo "side_by_side rc: $rc"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then echo "side_by_side: stopped at its time limit"
  elif [ "$rc" != 0 ]; then fail "step 2: side_by_side.py exited $rc"; fi

  local limit; limit=$(left 30)
  step "3. the whole baseline on $DEVICE: $BASE_UNITS units${BASE[*]:+, ${BASE[*]}}, stopped at ${limit}s if not done"
  local start=$SECONDS
  timeout -k 10 "$limit" "$PY" experiment.py --out_dir="$OUT/baseline" --device="$DEVICE" --overwrite \
    "${BASE[@]}" >"$OUT/baseline.out" 2>"$OUT/baseline.err"
  rc=$?
  echo "baseline rc: $rc, wall_s: $((SECONDS - start)), units finished: $(ls "$OUT/baseline/units" 2>/dev/null | wc -l) of $BASE_UNITS"
  tail -n 4 "$OUT/baseline.out"; tail -n 3 "$OUT/baseline.err"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    [ "$DRY" = 1 ] && fail "step 3: the tiny baseline ran past ${limit}s" || echo "baseline: stopped at the deadline"
  elif [ "$rc" != 0 ]; then fail "step 3: experiment.py exited $rc"; fi
  timeout -k 5 25 "$PY" -c "$VERSUS_RUN_0" "$OUT/baseline" run_0 \
    || fail "step 3: the comparison with run_0"

  echo
  if [ ${#FAILED[@]} = 0 ]; then echo "gpu_check: pass (${SECONDS}s)"; return 0; fi
  echo "gpu_check: FAIL ($(printf '%s; ' "${FAILED[@]}" | sed 's/; $//')) (${SECONDS}s)"; return 1
}

main | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
