#!/usr/bin/env bash
# One call on the GPU machine: the gpu-marked tests, then the benchmarks, all under one time
# budget so the whole call stays inside the device tool's 10-minute limit.
#
# From the session (device tool; see /work/.library/device/README.md):
#   run(command="bash benchmarks/gpu_session.sh", timeout_s=600, carry=[".whl"])
# Every step runs under `timeout`; a step that the budget cannot fit any more is skipped with a
# loud message.  All three stages rarely fit one call, so split them over warm calls:
#   run(command="bash benchmarks/gpu_session.sh tests", timeout_s=600, carry=[".whl"])
#   run(command="bash benchmarks/gpu_session.sh quantize", timeout_s=600, carry=[".whl"])
#   run(command="bash benchmarks/gpu_session.sh others", timeout_s=600, carry=[".whl"])
# (name .whl in carry only once it exists here; see Wheels below).
#
# Wheels (optional): the machine reaches no registry.  Packages it lacks travel in .whl/
# (ignored by git; carried with `carry=[".whl"]`), fetched here beforehand, e.g. QPyTorch's
# pure-Python wheel (it JIT-builds its CUDA extension on first import, about a minute there):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl qtorch==0.3.0
# (add pytest and its needs the same way only if the machine's image ever lacks pytest).
# WHEELS (default .whl when that folder exists) names the folder; its wheels are installed with
# pip --no-index into /tmp/site, which joins PYTHONPATH.
#
# Environment: Python 3.12, torch 2.11 (CUDA 13), Triton 3.6 on the machine.  Output goes to
# $OUT (the folder whose files come back): session.log (everything printed), pytest_gpu.log and
# one JSON per benchmark.  At most 8 files come back; this writes 7 at most.
# Knobs: GPU_SESSION_BUDGET (seconds for the whole script, default 570), QUANTIZE_ARGS (extra
# arguments for quantize_bandwidth.py, default --sweep).

set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_session_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
TEE_PID=$!

BUDGET=${GPU_SESSION_BUDGET:-570}
STAGES=${*:-tests quantize others}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
STATUS=0

say() { printf '\n===== %s (t=%ss of %ss) =====\n' "$*" "$SECONDS" "$BUDGET"; }

# Seconds a step may take: its cap, or what is left of the budget (10 s kept back).
allow() {
    local cap=$1 left=$((BUDGET - SECONDS - 10))
    if ((left < cap)); then echo "$left"; else echo "$cap"; fi
}

# run_step NAME CAP COMMAND...: run under `timeout`, skipped loudly when too little time is left.
run_step() {
    local name=$1 cap=$2
    shift 2
    local t
    t=$(allow "$cap")
    if ((t < 20)); then
        say "SKIPPED $name: only ${t}s of the budget left"
        STATUS=1
        return
    fi
    say "$name (timeout ${t}s)"
    timeout --kill-after=10 "$t" "$@"
    local rc=$?
    if ((rc == 124 || rc == 137)); then
        echo "!!!!! $name TIMED OUT after ${t}s"
    elif ((rc != 0)); then
        echo "!!!!! $name exited with status $rc"
    fi
    ((rc == 0)) || STATUS=1
}

say "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv || true
$PY -c 'import platform, torch, triton; print("python", platform.python_version(), "torch",
torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__,
"gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)'
uptime

WHEELS=${WHEELS:-}
if [[ -z $WHEELS && -d .whl ]]; then WHEELS=.whl; fi
if [[ -n $WHEELS ]]; then
    say "installing wheels from $WHEELS"
    ls "$WHEELS"
    if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$WHEELS"/*.whl; then
        export PYTHONPATH="$PYTHONPATH:/tmp/site"
    else
        echo "!!!!! installing the wheels in $WHEELS failed"
        STATUS=1
    fi
fi

stage_tests() {
    if ! $PY -c 'import pytest' 2>/dev/null; then
        say "!!!!! SKIPPING THE GPU TESTS: pytest is not installed here and no wheel of it was" \
            "carried (put pytest and its needs in .whl/, see the top of this script)"
        STATUS=1
        return
    fi
    say "collecting the gpu-marked tests"
    local files
    files=$(timeout 120 $PY -m pytest -q -m gpu --collect-only -p no:cacheprovider \
        --continue-on-collection-errors tests 2>/dev/null |
        grep -o '^tests/[^:]*\.py' | sort -u | tr '\n' ' ')
    if [[ -z $files ]]; then
        echo "collection found no gpu-marked test file; falling back to tests/kernels/test_gpu.py"
        files=tests/kernels/test_gpu.py
    fi
    echo "files: $files"
    # shellcheck disable=SC2086  # one word per file
    run_step "pytest -m gpu" 300 bash -c "set -o pipefail; $PY -m pytest -q -m gpu \
        -p no:cacheprovider -ra --durations=15 $files 2>&1 | tee '$OUT/pytest_gpu.log'"
}

stage_quantize() {
    # shellcheck disable=SC2086  # QUANTIZE_ARGS is a list of words
    run_step "benchmarks/quantize_bandwidth.py" 330 $PY benchmarks/quantize_bandwidth.py \
        --device cuda --json "$OUT/quantize_cuda.json" ${QUANTIZE_ARGS---sweep}
}

# The other benchmarks, when present: with --device cuda and --json where they take them;
# without --json, their printed output is in session.log.
stage_others() {
    local name script args
    for name in accumulation act_memory training_step; do
        script=benchmarks/$name.py
        if [[ ! -f $script ]]; then
            echo "($script is not here; skipped)"
            continue
        fi
        # Read the options off the source: running `--help` would run a script without argparse.
        args=()
        grep -q -- '"--device"' "$script" && args+=(--device cuda)
        grep -q -- '"--json"' "$script" && args+=(--json "$OUT/$name.json")
        run_step "$script ${args[*]}" 150 $PY "$script" "${args[@]}"
    done
}

for stage in $STAGES; do
    case $stage in
        tests) stage_tests ;;
        quantize) stage_quantize ;;
        others) stage_others ;;
        *) echo "unknown stage '$stage' (tests, quantize, others)"; STATUS=2 ;;
    esac
done

say "done, status $STATUS; files in $OUT"
ls -la "$OUT"
exec >&- 2>&-  # let tee see the end of its input and finish session.log before we return
wait "$TEE_PID" 2>/dev/null || sleep 1
exit $STATUS
