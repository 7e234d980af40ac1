#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, in under 8 minutes, one JSON record of
#   - the tests that need CUDA (pytest -m cuda),
#   - iresnet50 / iresnet100 training images/s in fp32, bf16 and fp16 autocast (NCHW and channels-last),
#   - embedding faces/s: torch fp32 / fp16 autocast vs onnxruntime CUDA fp32 / float16 (visual.fp16.onnx),
#   - the tiny pipeline end to end (dvc repro in a temporary copy, stages given --device cuda).
# See docs/gpu.md. Run from anywhere, with the project's Python first on PATH (or PYTHON=...):
#
#   .ci/gpu_check.sh [--out FILE]      # on a GPU machine (default FILE: benchmarks/results/gpu_check.json)
#   .ci/gpu_check.sh --dry-run [--out FILE]   # the CPU rehearsal: tiny sizes, no pipeline
#   .ci/gpu_check.sh ... -- --backbones iresnet18    # after --, options for python -m benchmarks.gpu_check
#
# Exit status: 0 all ran and the CUDA tests passed; 1 a CUDA test or a measurement failed (the JSON
# holds what was measured); 2 no CUDA device (nothing measured, no JSON) or a bad argument.
set -uo pipefail
caller=$PWD
cd "$(dirname "$0")/.."

dry_run=0
out=$PWD/benchmarks/results/gpu_check.json
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --out) out="${2:?--out needs a file}"; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$out" in /*) ;; *) out="$caller/$out" ;; esac
python=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$dry_run" = 0 ]; then
    if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        gpus=$(nvidia-smi -L 2>/dev/null | head -1)
        echo "gpu_check: torch sees no CUDA device here (nvidia-smi: ${gpus:-no GPU listed}); nothing was" \
             "measured. Run it on a machine with an NVIDIA GPU and CUDA drivers, or use --dry-run for the" \
             "CPU rehearsal." >&2
        exit 2
    fi
    device=cuda; sizes=(--pipeline); test_paths=(tests); tests_limit=130; measure_limit=320
else
    device=cpu; sizes=(--tiny); tests_limit=120; measure_limit=600
    test_paths=(tests/unit/train/test_precision.py tests/unit/inference/test_onnx_device_paths.py)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
began=$(date +%s)
# 1. the tests that need CUDA (skipped, and so counted, on the CPU)
timeout "$tests_limit" "$python" -m pytest -q -p no:cacheprovider -m cuda --junitxml "$work/cuda.xml" \
    "${test_paths[@]}" >"$work/pytest.log" 2>&1
tests_rc=$?
tail -3 "$work/pytest.log" >&2
# 2. the measurements (and the tiny pipeline on the GPU), into one JSON at $out
timeout "$measure_limit" "$python" -m benchmarks.gpu_check --device "$device" "${sizes[@]}" \
    --pytest-junit "$work/cuda.xml" --pytest-rc "$tests_rc" --out "$out" "$@" >"$work/measure.log" 2>&1
measure_rc=$?
if [ "$measure_rc" != 0 ]; then
    tail -20 "$work/measure.log" >&2
fi
echo "gpu_check: ${device}, $(( $(date +%s) - began )) s; CUDA tests exit ${tests_rc}, measurements exit" \
     "${measure_rc}; record: ${out}" >&2
if [ "$measure_rc" != 0 ] || { [ "$tests_rc" != 0 ] && [ "$tests_rc" != 5 ]; }; then
    exit 1
fi
exit 0
