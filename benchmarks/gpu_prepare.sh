#!/usr/bin/env bash
# Prepare here (CPU) what benchmarks/gpu_check.sh needs on a GPU machine that has no package index,
# no zarr/shapely/openslide/pydantic and no ../shared: the wheels (.whl/) and a work folder
# (.gpu-work/: extract.zarr + structure.zarr) of 256-px patches at 1 um/px and their structure
# maps from the first 40 HuBMAP tiles.
# Both paths are git-ignored; name them in the device tool's carry (64 MiB in all).
#   bash benchmarks/gpu_prepare.sh            # data from $WSI_AUG_DATA or ../shared/data
set -euo pipefail
cd "$(dirname "$0")/.."
data=${WSI_AUG_DATA:-../shared/data}
tiles="$data/hubmap-pas-tiles"
[ -d "$tiles" ] || { echo "error: $tiles not found; set WSI_AUG_DATA to the shared data folder" >&2; exit 2; }
# pydantic (the stages' parameters) and its needs, at the versions installed here: pydantic pins
# pydantic-core exactly, so the newest of each need not match. Also the small pytorch-msssim.
pins=$(python3 -c "
from importlib.metadata import version
for p in ('pydantic', 'pydantic-core', 'annotated-types', 'typing-inspection', 'typing-extensions'):
    print(f'{p}=={version(p)}')")
mapfile -t pins <<< "$pins"
../shared/tools/device-wheels.sh .whl "${pins[@]}" pytorch-msssim >/dev/null
mapfile -t slides < <(ls "$tiles"/*.jpg | sort | head -n "${GPU_TILES:-40}")
# Pixel size of the HuBMAP tiles is not recorded; about 1 um/px is an estimate (see the data README).
if [ -d .gpu-work/patches.zarr ]; then rm -rf .gpu-work; fi  # wsi-aug 0.1's layout: start over
wsi-aug extract "${slides[@]}" --work .gpu-work --size 256 --mpp 1.0 --slide-mpp 1.0 \
  --split 1,0,0 --label Glomeruli
wsi-aug structure --work .gpu-work --min-size 4
du -sh .whl .gpu-work
