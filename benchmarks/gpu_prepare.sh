#!/usr/bin/env bash
# Prepare here (CPU) what benchmarks/gpu_check.sh needs on a GPU machine that has no package index,
# no zarr/shapely/openslide and no ../shared: the wheels (.whl/) and a work folder of 256-px
# patches at 1 um/px and their structure maps from the first 40 HuBMAP tiles (.gpu-work/).
# Both paths are git-ignored; name them in the device tool's carry (64 MiB in all).
#   bash benchmarks/gpu_prepare.sh            # data from $WSI_AUG_DATA or ../shared/data
set -euo pipefail
cd "$(dirname "$0")/.."
data=${WSI_AUG_DATA:-../shared/data}
tiles="$data/hubmap-pas-tiles"
[ -d "$tiles" ] || { echo "error: $tiles not found; set WSI_AUG_DATA to the shared data folder" >&2; exit 2; }
../shared/tools/device-wheels.sh .whl >/dev/null
mapfile -t slides < <(ls "$tiles"/*.jpg | sort | head -n "${GPU_TILES:-40}")
# Pixel size of the HuBMAP tiles is not recorded; about 1 um/px is an estimate (see the data README).
wsi-aug extract "${slides[@]}" --work .gpu-work --size 256 --mpp 1.0 --slide-mpp 1.0 \
  --split 1,0,0 --label Glomeruli
wsi-aug structure --work .gpu-work --min-size 4
du -sh .whl .gpu-work
