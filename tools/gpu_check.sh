#!/usr/bin/env bash
# One pass over what only a CUDA machine can check: the whole test suite (its
# CUDA parametrizations included) and the warm-start benchmark on the GPU.
#
#   bash tools/gpu_check.sh OUT_DIR [TEST_SECONDS] [BENCH_SECONDS] [BENCH_ARGS...]
#
# Everything lands in OUT_DIR: env.txt (torch, CUDA, GPU), pytest.log and
# junit.xml, bench.log and the benchmark's results.json / results.md; with
# UPSTREAM_TEST_FILE set to a copy of upstream's test file, also
# upstream.log / upstream.json (tools/upstream_tests.py, stock vs ours).  Each
# stage has its own time limit so a slow stage cannot eat the other's time.
set -uo pipefail
cd "$(dirname "$0")/.."

out=${1:?usage: gpu_check.sh OUT_DIR [TEST_SECONDS] [BENCH_SECONDS] [BENCH_ARGS...]}
test_s=${2:-240}
bench_s=${3:-240}
shift $(( $# < 3 ? $# : 3 ))
bench_args=("$@")
[ ${#bench_args[@]} -gt 0 ] || bench_args=(--models mlp,bert --repeats 2 --cold-repeats 1)
mkdir -p "$out"
export PYTHONUNBUFFERED=1

python3 - >"$out/env.txt" 2>&1 <<'EOF'
import platform, shutil, sys
import torch
print("python", sys.version.split()[0], platform.machine())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton missing")
for name in ("hypothesis", "expecttest", "redis", "zstandard", "xdist", "transformers"):
    try:
        mod = __import__(name)
        print(name, getattr(mod, "__version__", "?"))
    except ImportError as e:
        print(name, "missing", e)
print("redis-server", shutil.which("redis-server"))
EOF
cat "$out/env.txt"

workers=()
python3 -c "import xdist" 2>/dev/null && workers=(-n 8 --dist loadfile)
echo "== tests (limit ${test_s}s)"
timeout "$test_s" python3 -m pytest test/ -q -p no:cacheprovider "${workers[@]}" \
    --junitxml="$out/junit.xml" -rfEs >"$out/pytest.log" 2>&1
echo "pytest rc $?"
tail -n 40 "$out/pytest.log"

# Upstream's own test file, CUDA classes included, beside stock torch: only
# when a copy is given (it is public PyTorch code, never part of this repo).
if [ -n "${UPSTREAM_TEST_FILE:-}" ]; then
    echo "== upstream's test file (limit ${test_s}s): $UPSTREAM_TEST_FILE"
    timeout "$test_s" python3 tools/upstream_tests.py "$UPSTREAM_TEST_FILE" \
        --json "$out/upstream.json" --junit-dir "$out/upstream" >"$out/upstream.log" 2>&1
    echo "upstream tests rc $?"
    cat "$out/upstream.log"
fi

echo "== benchmark (limit ${bench_s}s): ${bench_args[*]}"
timeout "$bench_s" python3 tools/bench_warmstart.py --device cuda --out "$out/bench" "${bench_args[@]}" \
    >"$out/bench.log" 2>&1
echo "bench rc $?"
tail -n 30 "$out/bench.log"
[ -f "$out/bench/results.md" ] && cat "$out/bench/results.md"
exit 0
