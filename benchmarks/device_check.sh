#!/usr/bin/env bash
# The GPU check (benchmarks.gpu_paper) on a GPU machine that has its own python3 and torch but no
# package registry and no copy of the data: a cloud box you copy the repository to, or a lent one.
#
#   bash benchmarks/device_check.sh stage [MIRROR]  # here: copy CIFAR-10's archive (20 MB) from the
#                                                   # data mirror (default ../shared/data) into
#                                                   # .gpu-mirror/ (git-ignored); ship it with the tree
#   bash benchmarks/device_check.sh run [ARGS...]   # there: lay out the data root from .gpu-mirror/,
#                                                   # run the check (ARGS go to benchmarks.gpu_paper)
#                                                   # and pack what it wrote into $OUT
#
# `run` installs nothing: it uses $GPU_PY, else .venv/bin/python where `make env` made one, else
# the machine's python3, and reads sncn from this tree. It leaves in $OUT (default gpu-out/):
# gpu.md, the Table 1 cells (table1_gpu_check.md and .csv), the whole console log (gpu_check.log,
# the CUDA tests' output included), nvidia-smi's view of the GPU, and paper_runs.tar.gz: the run
# folders without their checkpoints (each run's setting, metrics and log, what the table is
# computed from). The runs and the table go to $RESULTS (default results/paper), the data root to
# $SNCN_DATA (default data/). Its exit status is the check's.
set -euo pipefail
cd "$(dirname "$0")/.."
mirror_dir="${GPU_MIRROR:-.gpu-mirror}"
case "${1:-}" in
  stage)
    src="${2:-../shared/data}"
    archive="$src/cifar10/cifar10-jpeg.tar.gz"
    if [ ! -f "$archive" ]; then
      echo "no CIFAR-10 archive at $archive: give the data mirror's folder (see its MANIFEST.md)" >&2
      exit 2
    fi
    mkdir -p "$mirror_dir/cifar10"
    cp "$archive" "$mirror_dir/cifar10/"
    echo "staged $(du -sh "$mirror_dir" | cut -f1) in $mirror_dir: ship it with the tree, then" \
      "run 'bash benchmarks/device_check.sh run' there"
    ;;
  run)
    shift
    out="${OUT:-$PWD/gpu-out}"
    results="${RESULTS:-$PWD/results/paper}"
    mkdir -p "$out" "$mirror_dir"
    export SNCN_DATA="${SNCN_DATA:-$PWD/data}" PYTHONUNBUFFERED=1
    bash .ci/prepare-data "$mirror_dir" "$SNCN_DATA"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
      >"$out/nvidia-smi.csv" 2>&1 || echo "nvidia-smi did not answer" >"$out/nvidia-smi.csv"
    python="${GPU_PY:-python3}"
    [ -z "${GPU_PY:-}" ] && [ -x .venv/bin/python ] && python=.venv/bin/python
    set +e
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$python" -m benchmarks.gpu_paper \
      --out "$out/gpu.md" --results "$results" "$@" 2>&1 | tee "$out/gpu_check.log"
    status=${PIPESTATUS[0]}
    set -e
    cp "$results"/tables/table1_gpu_check.* "$out/" 2>/dev/null || true
    if [ -d "$results/runs" ]; then
      tar -czf "$out/paper_runs.tar.gz" --exclude='*.pt' --exclude='*.pth' \
        -C "$(dirname "$results")" "$(basename "$results")/runs"
    fi
    ls -l "$out"
    exit "$status"
    ;;
  *)
    echo "usage: bash benchmarks/device_check.sh stage [MIRROR] | run [gpu_paper arguments...]" >&2
    exit 2
    ;;
esac
