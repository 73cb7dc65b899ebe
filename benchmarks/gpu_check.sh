#!/usr/bin/env bash
# The one-shot GPU check of issue #3, run on the GPU machine in the repo root after
# benchmarks/gpu_prepare.sh has made .whl/ and .gpu-work/ here (carry both). Writes to $OUT:
# nvidia-smi.txt, gpu_gan.json/.md/.log (benchmarks/gpu_gan.py on the HuBMAP patches: eager fp32,
# eager bf16 and the CUDA-graph fast path of the full paper model; synthesis at batch 64; a
# train/resume/synthesize stage check), cli.log (train-gan + synthesize through the CLI) and
# recommended/ (the recommended preset at the paper's size for ~GPU_TRAIN_S=300 s, 1000 synthetic
# patches, eval-gan's table, grid and spectra; GPU_SKIP_TRAIN=1 leaves it out).
# .gpu-work/ is a work folder of the current layout: extract.zarr + structure.zarr.
#   bash benchmarks/gpu_check.sh          # GPU_CHECK_TINY=1: the CPU smoke version
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
py=${PYTHON:-python3}
if [ -d .whl ] && ! "$py" -c "import zarr, shapely, openslide; from pydantic import field_validator" 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.txt" 2>&1
"$py" -c "import sys, torch, zarr; print('python', sys.version.split()[0], 'torch', torch.__version__, 'zarr', zarr.__version__, 'cuda', torch.cuda.is_available())" | tee "$out/versions.txt"
tiny=()
[ -n "${GPU_CHECK_TINY:-}" ] && tiny=(--tiny)
work=.gpu-work
if [ -d "$work/patches.zarr" ] && [ ! -d "$work/extract.zarr" ]; then
  echo "note: $work has wsi-aug 0.1's layout (patches.zarr); rerun benchmarks/gpu_prepare.sh" \
    "to remake it as extract.zarr + structure.zarr; using made-up patches instead"
fi
[ -d "$work/extract.zarr" ] && [ -d "$work/structure.zarr" ] || work=""  # else made-up patches
rc=0
timeout "${GPU_CHECK_TIMEOUT:-330}" "$py" benchmarks/gpu_gan.py ${work:+--work "$work"} "${tiny[@]}" \
  --out "$out/gpu_gan.json" 2>&1 | tee "$out/gpu_gan.log" | grep -v "it/s]$" || true
rc=${PIPESTATUS[0]}
# The CLI end to end on a copy of the work folder: CUDA by default, one epoch, the fast path.
if [ -n "$work" ]; then
  cli=/tmp/gpu-cli-work
  rm -rf "$cli" && cp -r "$work" "$cli"
  {
    time "$py" -m wsi_aug train-gan --work "$cli" --epochs 1 --fast ${tiny:+--ngf 8 --ndf 8}
    time "$py" -m wsi_aug synthesize --work "$cli" --n 512
  } > "$out/cli.log" 2>&1 || rc=$((rc ? rc : 4))
  tail -n 4 "$out/cli.log"
fi
# Issue #9, section 5: the recommended preset at the paper's size (256 px at 1 um/px, ngf 64)
# for about GPU_TRAIN_S seconds on the fast path (steps from the fast path's measured rate),
# 1000 synthetic patches, eval-gan; grids, tables and spectra come back under $OUT/recommended/.
if [ -n "$work" ] && [ -z "${GPU_SKIP_TRAIN:-}" ]; then
  rec=/tmp/gpu-rec-work
  rm -rf "$rec" && mkdir -p "$rec" && cp -r "$work/extract.zarr" "$work/structure.zarr" "$rec/"
  steps=$("$py" -c "
import json, sys
try:
    r = json.load(open('$out/gpu_gan.json'))['it_per_s']['fast']
except Exception:
    r = 10.0
print(max(100, int(r * float('${GPU_TRAIN_S:-300}'))))")
  mkdir -p "$out/recommended"
  {
    echo "steps: $steps"
    time "$py" -m wsi_aug train-gan --work "$rec" --upsample resize --epochs 100000 \
      --max-steps "$steps" --fast --checkpoint-every 100000 ${tiny:+--ngf 8 --ndf 8}
    time "$py" -m wsi_aug synthesize --work "$rec" --n 1000 --seed 0
    time "$py" -m wsi_aug eval-gan --work "$rec" --unet-epochs 10
  } > "$out/recommended/log.txt" 2>&1 || rc=$((rc ? rc : 5))
  cp "$rec"/train-gan/losses.csv "$out/recommended/" 2>/dev/null
  cp "$(ls "$rec"/train-gan/samples/*.png 2>/dev/null | tail -n 1)" "$out/recommended/" 2>/dev/null
  cp "$rec"/eval-gan/results.md "$rec"/eval-gan/grid.png "$rec"/eval-gan/spectrum.png \
    "$out/recommended/" 2>/dev/null
  tail -n 6 "$out/recommended/log.txt"
fi
echo "gpu_check exit status: $rc"
exit "$rc"
