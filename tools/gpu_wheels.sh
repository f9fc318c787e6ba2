#!/usr/bin/env bash
# Run HERE (a machine with internet), in any directory: fetch into the repo's ignored .whl/ what the
# lent GPU machine (no internet; Python 3.12 with CUDA torch, numpy, scipy, typer, rich, safetensors,
# torchmetrics, imageio, pillow, matplotlib, huggingface-hub ... already there, see
# /work/.library/device/KINDS.md) lacks for `pewm data generate` and `pewm train`:
#
#   .whl/*.whl     cp312 manylinux x86-64 wheels, no dependencies (each needed one is named below)
#   .whl/gl/*.deb  the EGL/OpenGL loaders (glvnd); tools/gpu_train.sh unpacks them there only if
#                  that machine has no libEGL.so.1 / libOpenGL.so.0
#
# Never torch: the device's own CUDA build is used. Not carried: imageio-ffmpeg (~30 MB; only the
# mp4 sample videos need it, gpu_train.sh turns them off), mujoco-studio (Filament viewer; EGL
# rendering is in mujoco-core), starlette/uvicorn/websockets (pewm play). Idempotent: run it again
# and only what is missing is fetched; wheels of other versions are removed (two versions of one
# package stop the install there). Then, with the device tool:
#   run(carry=[".whl"], command="bash tools/gpu_train.sh")       (see docs/design.md, the end)
set -euo pipefail

# The versions pewm is tested with here (pip list). The device already has huggingface-hub 1.33
# and safetensors 0.8.0, which diffusers 0.42.1 needs (>=1.32.0, >=0.8.0).
PINS=(
  "mujoco==4.0.0" "mujoco-core==4.0.0" "PyOpenGL==3.1.10" "glfw==2.11.0"
  "gymnasium==1.4.0" "farama-notifications==0.0.6"
  "diffusers==0.42.1"
)
DEBS=(libegl1 libglvnd0 libopengl0 libgl1 libglx0)
PY=${PYTHON:-python3}

ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$ROOT"
DIR=.whl
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")"
touch "$EXCLUDE"
grep -qxF "/$DIR/" "$EXCLUDE" || { echo "/$DIR/" >>"$EXCLUDE"; echo "added /$DIR/ to $EXCLUDE"; }
git check-ignore -q "$DIR/x.whl" || { echo "error: $DIR/ is not ignored by git" >&2; exit 1; }
mkdir -p "$DIR/gl"

echo "== wheels for Python 3.12, manylinux x86-64, into $ROOT/$DIR"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DIR" "${PINS[@]}"

# keep exactly the pinned wheels (a wheel's name: DIST-VERSION-...; DIST with '_' for '-', any case)
"$PY" - "$DIR" "${PINS[@]}" <<'EOF'
import re, sys
from pathlib import Path
d, pins = Path(sys.argv[1]), sys.argv[2:]
want = {(re.sub(r"[-_.]+", "_", n).lower(), v) for n, v in (p.split("==") for p in pins)}
have = {}
for w in d.glob("*.whl"):
    name, version = w.name.split("-")[:2]
    key = (re.sub(r"[-_.]+", "_", name).lower(), version)
    if key in want:
        have[key] = w
    else:
        print(f"removing {w.name} (not pinned)")
        w.unlink()
missing = sorted(want - set(have))
if missing:
    sys.exit(f"error: no wheel for {missing}")
EOF

echo "== EGL/OpenGL loader packages (.deb) into $DIR/gl"
if command -v apt-get >/dev/null && [ "$(uname -m)" = x86_64 ]; then
  for p in "${DEBS[@]}"; do
    if ls "$DIR/gl/${p}_"*_amd64.deb >/dev/null 2>&1; then continue; fi
    (cd "$DIR/gl" && apt-get -q download "$p:amd64") || (cd "$DIR/gl" && apt-get -oAPT::Architecture=amd64 \
      -oAPT::Architectures=amd64 -q download "$p") || echo "warning: could not download $p (the device may have it)"
  done
else
  echo "warning: no apt-get on x86-64 here: no loader packages (the device may have them)"
fi

echo "== contents"
ls -l "$DIR"/*.whl "$DIR"/gl/*.deb 2>/dev/null | awk '{printf "%10d  %s\n", $5, $NF}'
total=$(du -cb "$DIR"/*.whl "$DIR"/gl/*.deb 2>/dev/null | tail -1 | cut -f1)
tree=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null || true) \
  | awk '$2 == "total" {s += $1} END {print s + 0}')
awk -v w="$total" -v t="$tree" -v d="$DIR" 'BEGIN {m = 1048576; printf "total in %s: %.1f MiB; with the working tree that travels (%.1f MiB): %.1f MiB of the 64 MiB limit\n", d, w / m, t / m, (w + t) / m}'
if [ $((total + tree)) -gt $((64 * 1048576)) ]; then
  echo "warning: over 64 MiB: the device call will refuse the working tree" >&2
fi
