#!/usr/bin/env bash
# Everything pyattn checks on a machine with an NVIDIA GPU and a CUDA build of torch:
#   1. build pyattn._C with CUDA (in place);
#   2. the whole test suite (its CUDA cases run here);
#   3. compute-sanitizer memcheck and racecheck over the CUDA ops on a few shapes;
#   4. the quick benchmark on the GPU;
# then writes bench/results/gpu_<device>_<date>.md naming the device, the versions, the
# test and sanitizer summaries and the bench table (commit that file).
#
# A failing step does not stop the later ones; the script lists the failures and exits
# non-zero at the end. Full logs of every step stay in build/gpu_check/<name>/ (ignored
# by git); the bench's results.json and plot go to bench/results/<name>/.
#
# Environment: PYTHON (default python), MAX_JOBS / TORCH_CUDA_ARCH_LIST (build),
# PYATTN_GPU_SKIP_BUILD=1 (reuse the built extension), CUDA_HOME (compute-sanitizer).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

die() { echo "gpu_check: $*" >&2; exit 1; }
command -v nvidia-smi >/dev/null 2>&1 || die "nvidia-smi not found: this script needs an NVIDIA GPU"
GPU_LINE=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader -i 0 2>/dev/null | head -n1)
[[ -n "$GPU_LINE" ]] || die "nvidia-smi lists no GPU"
GPU_NAME=${GPU_LINE%%,*}
DRIVER=$(echo "${GPU_LINE#*,}" | xargs)
SLUG=$(echo "$GPU_NAME" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-+|-+$//g')
DATE=$(date +%Y-%m-%d)
NAME="gpu_${SLUG}_${DATE}"
OUT="bench/results/$NAME"
LOGS="build/gpu_check/$NAME"
REPORT="bench/results/$NAME.md"
mkdir -p "$LOGS" "$OUT"
echo "gpu_check: $GPU_NAME (driver $DRIVER); logs in $LOGS"

FAILED=()
# step NAME LOG CMD...: runs CMD with output to the terminal and LOG; records a failure.
step() {
  local name=$1 log=$2
  shift 2
  echo "=== $name"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc ($((SECONDS - t0)) s)"
  if ((rc != 0)); then FAILED+=("$name (exit $rc)"); fi
  return 0
}

# ---- 1. build -------------------------------------------------------------------------
if [[ "${PYATTN_GPU_SKIP_BUILD:-0}" != 1 ]]; then
  step build "$LOGS/build.log" env PYATTN_FORCE_CUDA=1 bash scripts/dev_build.sh
fi
step "cuda available" "$LOGS/env.log" "$PYTHON" - <<'EOF'
import torch
import pyattn
info = pyattn.build_info()
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0)
      if torch.cuda.is_available() else None)
print("pyattn.build_info()", info)
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
assert info.get("cuda"), "pyattn was built without CUDA"
EOF

# ---- 2. tests --------------------------------------------------------------------------
step tests "$LOGS/tests.log" "$PYTHON" -m pytest -q tests

# ---- 3. compute-sanitizer ----------------------------------------------------------------
SANITIZER=$(command -v compute-sanitizer || true)
for d in "${CUDA_HOME:-}" /usr/local/cuda; do
  [[ -z "$SANITIZER" && -n "$d" && -x "$d/bin/compute-sanitizer" ]] && SANITIZER="$d/bin/compute-sanitizer"
done
# The ops on awkward shapes: sk = 1, odd, just past the warp-kernel limit, long rows
# (re-read path), a misaligned view (scalar path), masks, causal, every dtype.
SAN_SCRIPT="$LOGS/sanitize_ops.py"
cat >"$SAN_SCRIPT" <<'EOF'
import torch
import pyattn  # registers torch.ops.pyattn

ops = torch.ops.pyattn
dev = "cuda"
for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
    for sk in (1, 7, 32, 100, 1024, 1025, 20000, 70001):
        sq = 3
        base = torch.randn(2, 2, sq, sk + 1, device=dev, dtype=dtype)
        for x in (base[..., :sk].contiguous(), base[..., 1:]):  # aligned, then offset by one
            bmask = torch.rand(2, 1, sq, sk, device=dev) < 0.3
            amask = torch.randn(1, 2, sq, sk, device=dev, dtype=dtype)
            for mask, causal in ((None, False), (bmask, True), (amask, False)):
                y = ops.scaled_masked_softmax_fwd(x, mask, 0.5, causal)
                dy = torch.randn_like(y)
                dx = ops.scaled_masked_softmax_bwd(y, dy, 0.5)
                torch.cuda.synchronize()
                assert torch.isfinite(y).all() and torch.isfinite(dx).all(), (dtype, sk)
# attention: odd lengths past a block, GQA, dv != d, every mask kind, lq = 1, every dtype.
for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
    for (b, hq, hkv, lq, lk, d, dv) in ((2, 4, 2, 65, 130, 64, 48), (1, 2, 1, 1, 37, 100, 128), (1, 1, 1, 70, 33, 7, 5)):
        q = torch.randn(b, hq, lq, d, device=dev, dtype=dtype)
        k = torch.randn(b, hkv, lk, d, device=dev, dtype=dtype)
        v = torch.randn(b, hkv, lk, dv, device=dev, dtype=dtype)
        bmask = torch.rand(b, 1, lq, lk, device=dev) < 0.7
        amask = torch.randn(lq, lk, device=dev, dtype=dtype)
        lengths = torch.randint(0, lk + 1, (b,), device=dev)
        for mask, kl, causal, br, wl, wr in ((None, None, False, False, -1, -1), (bmask, lengths, True, True, -1, -1),
                                             (amask, None, False, False, 5, 3)):
            out, lse = ops.attention_fwd(q, k, v, mask, kl, 0.3, causal, br, wl, wr)
            dout = torch.randn_like(out)
            grads = ops.attention_bwd(dout, q, k, v, out, lse, torch.randn_like(lse), mask, kl, 0.3, causal, br, wl,
                                      wr, mask is amask)
            torch.cuda.synchronize()
            assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads), (dtype, lq, lk)
# lstm: packed sequences both ways, batch 3 (the persistent loop) and 12 (per step).
for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
    for n in (3, 12):
        lstm = pyattn.nn.LSTM(24, 40, num_layers=2, bidirectional=True, device=dev, dtype=dtype)
        x = torch.randn(7, n, 24, device=dev, dtype=dtype, requires_grad=True)
        lengths = torch.sort(torch.randint(1, 8, (n,)), descending=True).values
        lengths[0] = 7
        y, (h, c) = lstm(torch.nn.utils.rnn.pack_padded_sequence(x, lengths))
        (y.data.sum() + h.sum() + c.sum()).backward()
        torch.cuda.synchronize()
        assert torch.isfinite(x.grad).all(), (dtype, n)
print("sanitize_ops: done")
EOF
if [[ -z "$SANITIZER" ]]; then
  echo "gpu_check: compute-sanitizer not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)"
  FAILED+=("compute-sanitizer (not found)")
else
  for tool in memcheck racecheck; do
    # No caching allocator, so out-of-bounds accesses are not hidden inside pooled blocks.
    # PYTHONPATH: the script lives outside the checkout but imports the in-place build.
    step "sanitizer $tool" "$LOGS/sanitizer_$tool.log" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
      PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$SANITIZER" --tool "$tool" --error-exitcode 1 "$PYTHON" "$SAN_SCRIPT"
  done
fi

# ---- 4. benchmark --------------------------------------------------------------------------
step bench "$LOGS/bench.log" "$PYTHON" -m pyattn.bench --quick --device cuda --out "$OUT"

# ---- report ----------------------------------------------------------------------------------
VERSIONS=$("$PYTHON" -c 'import torch, sys; print(f"torch {torch.__version__}, CUDA (torch) {torch.version.cuda}, python {sys.version.split()[0]}")' 2>&1 || true)
NVCC_V=$( (command -v nvcc >/dev/null && nvcc --version | sed -n 's/.*release \(.*\),.*/\1/p') || echo "not found")
summary() { # last pytest-style or sanitizer summary lines of a log
  [[ -f "$1" ]] && grep -E "$2" "$1" | tail -n "${3:-1}" || echo "(no log)"
}
{
  echo "# pyattn GPU check: $GPU_NAME, $DATE"
  echo
  echo "- Device: $GPU_NAME (driver $DRIVER)"
  echo "- Versions: $VERSIONS; nvcc $NVCC_V"
  echo "- Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "- Produced by \`scripts/gpu_check.sh\`; bench results.json and plot in \`$OUT/\`"
  echo
  echo "## Result"
  echo
  if ((${#FAILED[@]})); then
    for f in "${FAILED[@]}"; do echo "- FAILED: $f"; done
  else
    echo "All steps passed."
  fi
  echo
  echo "## Tests (\`python -m pytest -q tests\`)"
  echo
  echo '```'
  summary "$LOGS/tests.log" '(passed|failed|error|skipped|no tests ran)' 1
  echo '```'
  echo
  echo "## compute-sanitizer (the ops on sk = 1 .. 70001, aligned and offset views, masks, causal, 4 dtypes)"
  echo
  echo '```'
  for tool in memcheck racecheck; do
    echo "$tool: $(summary "$LOGS/sanitizer_$tool.log" '(ERROR|RACECHECK) SUMMARY' 1)"
  done
  echo '```'
  echo
  echo "## Benchmark (\`python -m pyattn.bench --quick --device cuda\`)"
  echo
  echo '```'
  [[ -f "$LOGS/bench.log" ]] && grep -v '%|' "$LOGS/bench.log" || echo "(no log)"  # drop progress bars
  echo '```'
} >"$REPORT"
echo "gpu_check: wrote $REPORT"

if ((${#FAILED[@]})); then
  echo "gpu_check: FAILED steps:"
  printf '  %s\n' "${FAILED[@]}"
  exit 1
fi
echo "gpu_check: all steps passed"
