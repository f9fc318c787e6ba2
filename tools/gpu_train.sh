#!/usr/bin/env bash
# Run THERE (the lent GPU machine; from the repo root, OUT set by the device tool):
#     bash tools/gpu_train.sh                       with carry [".whl"] (made here by tools/gpu_wheels.sh)
# Installs the carried wheels (if pewm's imports are missing), renders a dataset with
# `pewm data generate` unless DATA is given, trains with `pewm train` on CUDA with bf16 autocast
# (on the CPU in fp32 when there is no CUDA: that is how tests/test_gpu_train_script.py runs it),
# stops inside the time budget and writes into $OUT (the 8-files/16-MiB limits of the device tool,
# checked at the end: a violation fails the script):
#     model/config.json, model/model.safetensors (fp16), [model/memory.json]   the EMA weights
#     metrics.jsonl   train_config.json   summary.json   gpu_train.log
# Weights over 16 MiB (e.g. the tiny model with the voxel-xattn reader: 16.1 MiB in fp16) come as
# model/model-0000N-of-0000K.safetensors shards instead; summary.json's "merge" is the command that
# joins them here into model.safetensors (WorldModel.from_pretrained then loads the directory).
# `pewm train` has no time-limit option: the run is stopped with SIGTERM (`timeout`) when the budget
# is spent and the EMA weights of its latest checkpoint (every CKPT_EVERY steps) are exported; a run
# that reaches STEPS first exports its final model/. Settings (environment; defaults in brackets):
#   MINUTES [8]      budget for the whole script, install and data included (a device command <= 10 min)
#   PRESET [tiny]    training preset (the fp16 weights of base/paper models exceed 16 MiB)
#   STAGE [backbone] autoencoder | backbone | memory
#   INIT [shipped]   model/run/checkpoint dir to start from (carried), 'shipped', or '' / none
#   READER []        memory reader (--reader); '' = INIT's reader, or pewm's default without INIT
#   STEPS [100000]   total optimizer steps (the time budget usually ends the run first)
#   BATCH []         clips per step; '' = 32 on CUDA, the preset's on the CPU
#   PRECISION []     bf16 | fp32; '' = bf16 on CUDA, fp32 on the CPU
#   DEVICE []        cuda | cpu; '' = cuda when torch sees a GPU
#   DATA []          dataset dir (carried); '' = generate HOUSES x EPISODES episodes of EPISODE_STEPS
#   HOUSES [16] EPISODES [4] EPISODE_STEPS [100] RESOLUTION [64] SEED [0] WORKERS [nproc]
#   CKPT_EVERY [200] LOG_EVERY [] (preset's) THREADS [] (torch CPU threads)
#   RESUME [0]       1: continue the run in $WORK/run (only on a machine still warm from the last call)
#   EXPORT_DTYPE [fp16]   fp16 | fp32 weights in $OUT/model
#   EXPORT_S [45]    seconds of the budget kept for stopping, export and copies; MIN_TRAIN_S [20]
#   WORK [/tmp/pewm_gpu]  dataset and run directory;  SITE [/tmp/site] where wheels are installed
#   SHARD_BYTES [16 MiB - 64 KiB]  largest weights file written into OUT (bigger ones are split)
#   TRAIN_ARGS []    more `pewm train` options, e.g. "--lr 2e-4 --reader-option init=zero-out"
set -euo pipefail

START=$(date +%s)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [ -z "${OUT:-}" ]; then
  echo "error: set OUT to the directory the results go to (the device tool sets it)" >&2
  exit 2
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu_train.log"
export PYTHONUNBUFFERED=1
MAX_FILE=$((16 * 1048576))

MINUTES=${MINUTES:-8}
PRESET=${PRESET:-tiny}
STAGE=${STAGE:-backbone}
INIT=${INIT-shipped}
READER=${READER:-}
STEPS=${STEPS:-100000}
BATCH=${BATCH:-}
PRECISION=${PRECISION:-}
DEVICE=${DEVICE:-}
DATA=${DATA:-}
HOUSES=${HOUSES:-16}
EPISODES=${EPISODES:-4}
EPISODE_STEPS=${EPISODE_STEPS:-100}
RESOLUTION=${RESOLUTION:-64}
SEED=${SEED:-0}
WORKERS=${WORKERS:-$(nproc)}
CKPT_EVERY=${CKPT_EVERY:-200}
LOG_EVERY=${LOG_EVERY:-}
THREADS=${THREADS:-}
RESUME=${RESUME:-0}
EXPORT_DTYPE=${EXPORT_DTYPE:-fp16}
SHARD_BYTES=${SHARD_BYTES:-$((MAX_FILE - 65536))}
EXPORT_S=${EXPORT_S:-45}  # kept back for the stop (15 s grace), the export and the copies
MIN_TRAIN_S=${MIN_TRAIN_S:-20}  # less time than this left for training: fail
WORK=${WORK:-/tmp/pewm_gpu}
SITE=${SITE:-/tmp/site}
TRAIN_ARGS=${TRAIN_ARGS:-}
PY=${PYTHON:-python3}
BUDGET_S=$(awk -v m="$MINUTES" 'BEGIN {printf "%d", m * 60}')
DEADLINE=$((START + BUDGET_S))

say() { printf '[gpu_train %4ds] %s\n' "$(($(date +%s) - START))" "$*"; }
left() { echo $((DEADLINE - $(date +%s))); }

main() {
  set -euo pipefail
  say "repo $ROOT ($(git rev-parse --short HEAD 2>/dev/null || echo '?')), OUT=$OUT, budget ${BUDGET_S}s"

  # -- 1. Python packages -----------------------------------------------------------------------
  export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
  local mods="mujoco gymnasium diffusers typer safetensors"
  if "$PY" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))" $mods; then
    say "python packages: all importable, nothing to install"
  elif compgen -G ".whl/*.whl" >/dev/null; then
    say "python packages: installing $(ls .whl/*.whl | wc -l) carried wheels into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    export PYTHONPATH="$SITE:$PYTHONPATH"  # the carried versions first
    "$PY" -c "import sys, importlib; [importlib.import_module(m) for m in sys.argv[1:]]" $mods
  else
    say "error: pewm's packages are missing and there is no .whl/ (run tools/gpu_wheels.sh here, carry .whl)"
    return 1
  fi

  # -- 2. device and precision ------------------------------------------------------------------
  local found auto gpu torch_v py_v
  found=$("$PY" -c "import sys, torch; c = torch.cuda.is_available(); print('cuda' if c else 'cpu',
    torch.cuda.get_device_name(0).replace(' ', '_') if c else '-', torch.__version__, sys.version.split()[0])")
  read -r auto gpu torch_v py_v <<<"$found"
  DEVICE=${DEVICE:-$auto}
  say "torch $torch_v, python $py_v, GPU: ${gpu//_/ }"
  if [ "$DEVICE" = cpu ]; then
    PRECISION=${PRECISION:-fp32}
    say "device: CPU$([ "$auto" = cpu ] && echo ' (no CUDA here)'): precision $PRECISION, batch ${BATCH:-the preset default}"
  else
    PRECISION=${PRECISION:-bf16}
    BATCH=${BATCH:-32}
    say "device: $DEVICE, precision $PRECISION (autocast), batch $BATCH"
  fi

  # -- 3. data ----------------------------------------------------------------------------------
  export MUJOCO_GL=egl
  if [ -n "$DATA" ]; then
    [ -d "$DATA" ] || { say "error: DATA=$DATA is not a directory (carry it)"; return 1; }
    say "data: the carried dataset $DATA"
  else
    DATA="$WORK/data"
    if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1 ' || ! ldconfig -p 2>/dev/null | grep -q 'libOpenGL.so.0 '; then
      if compgen -G ".whl/gl/*.deb" >/dev/null && [ "$(id -u)" = 0 ]; then
        say "EGL: no libEGL.so.1/libOpenGL.so.0 here: unpacking the carried loaders .whl/gl/*.deb into /"
        for f in .whl/gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
      else
        say "warning: no libEGL.so.1/libOpenGL.so.0 and no carried .whl/gl/*.deb: rendering may fail"
      fi
    fi
    local vendor=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    if [ "$DEVICE" != cpu ] && [ -f "$vendor" ] && [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ]; then
      export __EGL_VENDOR_LIBRARY_FILENAMES=$vendor
      say "EGL: vendor file $vendor"
    fi
    "$PY" -c "from mujoco.egl import GLContext; c = GLContext(8, 8); c.make_current(); c.free()" \
      || { say "error: MuJoCo cannot open an EGL context (MUJOCO_GL=egl); carry a dataset as DATA instead"; return 1; }
    local gen_limit=$(( $(left) / 2 ))
    say "data: generating $HOUSES houses x $EPISODES episodes x $EPISODE_STEPS steps at ${RESOLUTION}px with $WORKERS workers"\
        "into $DATA (at most ${gen_limit}s: half the budget left)"
    local rc=0
    timeout -s TERM -k 10 "$gen_limit" "$PY" -m pewm.cli.main data generate --out "$DATA" --houses "$HOUSES" \
      --episodes-per-house "$EPISODES" --steps "$EPISODE_STEPS" --resolution "$RESOLUTION" --seed "$SEED" \
      --workers "$WORKERS" || rc=$?
    if [ "$rc" != 0 ]; then
      if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        say "error: data generation did not finish in ${gen_limit}s: lower HOUSES/EPISODES (or raise MINUTES)"
      else
        say "error: pewm data generate failed (exit $rc)"
      fi
      return 1
    fi
  fi

  # -- 4. training -------------------------------------------------------------------------------
  local run="$WORK/run" args=()
  if [ "$RESUME" = 1 ]; then
    args=(train --out "$run" --resume --steps "$STEPS")
    say "train: resuming $run to step $STEPS"
  else
    args=(train --out "$run" --overwrite --preset "$PRESET" --data "$DATA" --stage "$STAGE" --steps "$STEPS"
          --precision "$PRECISION" --seed "$SEED")
    case "$INIT" in
      ""|none) INIT="" ;;
      *) args+=(--init "$INIT")
         if [ -z "$READER" ]; then  # `pewm train` would switch to its default reader (voxel-xattn)
           READER=$("$PY" - "$INIT" <<'PYEOF'
import sys
from pewm.assets import default_model_dir
from pewm.model import WorldModel
from pewm.model.checkpoint import resolve_model_dir
p = sys.argv[1]
print(WorldModel.load_config(default_model_dir() if p == "shipped" else resolve_model_dir(p)).reader)
PYEOF
)
           say "train: keeping INIT's memory reader $READER (set READER to change it)"
         fi ;;
    esac
    if [ -n "$READER" ]; then args+=(--reader "$READER"); fi
  fi
  args+=(--device "$DEVICE" --checkpoint-every "$CKPT_EVERY" --keep-checkpoints 2 --sample-every 1000000000
         --no-progress)
  if [ -n "$BATCH" ]; then args+=(--batch-size "$BATCH"); fi
  if [ -n "$LOG_EVERY" ]; then args+=(--log-every "$LOG_EVERY"); fi
  if [ -n "$THREADS" ]; then args+=(--threads "$THREADS"); fi
  # shellcheck disable=SC2206
  if [ -n "$TRAIN_ARGS" ]; then args+=($TRAIN_ARGS); fi
  local train_limit=$(( $(left) - EXPORT_S ))
  if [ "$train_limit" -lt "$MIN_TRAIN_S" ]; then
    say "error: only ${train_limit}s left to train: raise MINUTES or make less data"
    return 1
  fi
  say "train: pewm ${args[*]}"
  say "train: stopped with SIGTERM after ${train_limit}s if STEPS=$STEPS is not reached first"
  local rc=0 t0
  t0=$(date +%s)
  timeout -s TERM -k 15 "$train_limit" "$PY" -m pewm.cli.main "${args[@]}" || rc=$?
  local train_s=$(( $(date +%s) - t0 )) stopped=false
  case "$rc" in
    0) say "train: finished all $STEPS steps in ${train_s}s" ;;
    124|137) stopped=true; say "train: time budget reached after ${train_s}s: exporting the latest checkpoint" ;;
    *) say "error: pewm train failed (exit $rc)"; return 1 ;;
  esac
  if [ -f "$run/metrics.jsonl" ]; then say "train: last metrics: $(tail -n 1 "$run/metrics.jsonl")"; fi

  # -- 5. export into $OUT -----------------------------------------------------------------------
  rm -rf "$OUT/model"
  "$PY" - "$run" "$OUT" "$EXPORT_DTYPE" "$stopped" "$train_s" "$DEVICE" "$PRECISION" "${BATCH:-preset}" \
    "$SHARD_BYTES" <<'EOF'
import json, subprocess, sys
from pathlib import Path

import torch

from pewm.model import WorldModel
from pewm.model.checkpoint import resolve_model_dir

run, out, dtype, stopped, train_s, device, precision, batch, shard_bytes = sys.argv[1:]
run, out, shard_bytes = Path(run), Path(out), int(shard_bytes)
try:
    src = resolve_model_dir(run, what="run")
except FileNotFoundError:
    sys.exit(f"error: {run} has no model and no checkpoint yet (stopped before the first): lower CKPT_EVERY")
model = WorldModel.from_pretrained(src)
model.save_pretrained(out / "model", dtype=torch.float16 if dtype == "fp16" else None)
weights, merge = out / "model" / "model.safetensors", None
if weights.stat().st_size > shard_bytes:  # the device tool returns files of at most 16 MiB
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(weights, "pt") as f:
        meta = f.metadata()
    tensors, shards, size = load_file(weights), [{}], 0
    for k, v in tensors.items():
        n = v.numel() * v.element_size() + 200
        if shards[-1] and size + n > 0.98 * shard_bytes:  # (leaves room for the header)
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += n
    for i, part in enumerate(shards, 1):
        save_file(part, weights.with_name(f"model-{i:05d}-of-{len(shards):05d}.safetensors"), metadata=meta)
    weights.unlink()
    merge = ("python -c \"import glob, sys; from safetensors import safe_open; from safetensors.torch import load_file, "
             "save_file; d = sys.argv[1]; fs = sorted(glob.glob(d + '/model-*-of-*.safetensors')); "
             "save_file({k: v for f in fs for k, v in load_file(f).items()}, d + '/model.safetensors', "
             "metadata=safe_open(fs[0], 'pt').metadata())\" MODEL_DIR")
    print(f"weights over {shard_bytes} bytes: split into {len(shards)} shards; join them here with: {merge}")
metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()] if (run / "metrics.jsonl").is_file() else []
if src.name == "ema":  # RUN/checkpoints/step_XXXXXXXX/ema
    step = int(src.parent.name.split("_")[-1])
else:  # RUN/model: the run reached its last step
    step = metrics[-1]["step"] if metrics else None
def git(*args):
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()
    except OSError:  # no git there
        return None
commit, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
summary = {
    "exported": str(src), "step": step, "stopped_by_time_limit": stopped == "true", "train_seconds": int(train_s),
    "device": device, "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
    "precision": precision, "batch": batch, "dtype": dtype, "torch": torch.__version__,
    "parameters": sum(p.numel() for p in model.parameters()), "reader": model.config.reader,
    "last_metrics": metrics[-1] if metrics else None, "git": commit, "git_dirty": bool(dirty), "merge": merge,
}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"exported {src} (step {step}) as {dtype} into {out / 'model'}")
EOF
  if [ -f "$run/metrics.jsonl" ]; then cp "$run/metrics.jsonl" "$OUT/metrics.jsonl"; fi
  cp "$run/config.json" "$OUT/train_config.json"
  say "done in $(( $(date +%s) - START ))s"
}

check_out() {  # the device tool's limits on what comes back
  local bad=0 n=0 f size rel depth
  while IFS= read -r -d '' f; do
    n=$((n + 1))
    rel=${f#"$OUT"/}
    size=$(stat -c %s "$f")
    depth=$(awk -F/ '{print NF - 1}' <<<"$rel")
    printf '  %10d  %s\n' "$size" "$rel"
    if [ "$size" -gt "$MAX_FILE" ]; then echo "error: $rel is over 16 MiB ($size bytes): it would not come back"; bad=1; fi
    if [ "$depth" -gt 2 ]; then echo "error: $rel is more than 2 folders down"; bad=1; fi
    if [[ ! "$rel" =~ ^[A-Za-z0-9._/-]+$ ]]; then echo "error: $rel has characters the device tool refuses"; bad=1; fi
  done < <(find "$OUT" -type f -print0 | sort -z)
  if [ "$n" -gt 8 ]; then echo "error: $n files in OUT, at most 8 come back"; bad=1; fi
  local total
  total=$(du -sb "$OUT" | cut -f1)
  if [ "$total" -gt $((64 * 1048576)) ]; then echo "error: OUT holds $total bytes, over 64 MiB"; bad=1; fi
  echo "OUT: $n files, $total bytes"
  return "$bad"
}

set +e
main 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
if [ "$(stat -c %s "$LOG")" -gt $((MAX_FILE - 65536)) ]; then  # keep the log's end
  tail -c $((MAX_FILE - 65536)) "$LOG" >"$LOG.tmp" && mv "$LOG.tmp" "$LOG"
fi
echo "[gpu_train] files in $OUT:"
if ! check_out; then
  echo "[gpu_train] error: OUT breaks the device tool's limits (see above)" >&2
  [ "$rc" = 0 ] && rc=3
fi
[ "$rc" = 0 ] && echo "[gpu_train] ok" || echo "[gpu_train] FAILED (exit $rc); the log is $LOG" >&2
exit "$rc"
