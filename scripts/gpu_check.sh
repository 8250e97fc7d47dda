#!/usr/bin/env bash
# Everything pyattn checks on a machine with an NVIDIA GPU and a CUDA build of torch, sized
# for a borrowed machine with a 15-minute device budget (its start-up included): the steps
# below take at most 660 s together (about 8-9 minutes on an H200 with 16 cores).
#
#   step        limit  what
#   harness     120 s  build/harness/attention_harness --quick, when carried (bench/cuda/build_harness.sh)
#   lstm_harness 40 s  build/harness/lstm_harness --quick, when carried (the same script)
#   build       180 s  PYATTN_FORCE_CUDA=1 scripts/dev_build.sh for this card's arch only
#                      (TORCH_CUDA_ARCH_LIST from nvidia-smi's compute_cap), MAX_JOBS=nproc
#   cuda_check   20 s  torch sees the GPU and pyattn was built with CUDA; if not, the steps
#                      after it are not run (they would only skip or fail)
#   tests       120 s  the CUDA cases of tests/ under pytest-xdist, one worker per core
#   memcheck     60 s  compute-sanitizer memcheck over the ops, full shapes
#   racecheck    60 s  compute-sanitizer racecheck over the ops, fewer rows (same kernel paths)
#   bench        60 s  python -m pyattn.bench --quick --device cuda
#   word2vec    150 s  bench/word2vec_cuda.py on a carried corpus (issue 15's CUDA rows), when
#                      build/w2v/ holds it (bench/cuda/carry_word2vec.sh); else not run
#
# PYATTN_GPU_FOCUS=word2vec checks word2vec alone, in at most 560 s (about 6 minutes with the
# build): no harnesses, the tests of test_word2vec.py and test_negative_sampling.py only,
# the sanitizers over the negative-sampling ops only, and the word2vec step instead of the
# bench (then it fails if build/w2v/ was not carried).
#
# A step past its limit gets SIGTERM (and SIGKILL 10 s later), so is its whole process
# group (xdist workers, the sanitizer's target, nvcc). A failing or timed-out step does
# not stop the later ones; the script exits non-zero at the end if any failed.
#
# The results file bench/results/gpu_<device>_<date>.md (commit it) is rewritten before
# and after every step and on exit, so a failure, a timeout or an interruption (even a
# SIGKILL: then it says which step was running) still leaves one. It names the device,
# driver, compute capability, versions and commit, and gives each step's exit code and
# duration, the test outcomes (crashed tests listed apart from failures, by
# scripts/summarize_pytest.py), the sanitizer summaries and the bench table. Full logs:
# build/gpu_check/<name>/<step>.log (ignored by git; `tail -f` them to watch a step);
# the bench's results.json and plot: bench/results/<name>/.
#
# Environment: PYTHON (default python; scripts/dev_build.sh builds with the `python` on
# PATH), TORCH_CUDA_ARCH_LIST and MAX_JOBS (defaults above), PYATTN_GPU_SKIP_BUILD=1 (reuse
# the built extension), PYATTN_GPU_LIMIT_<STEP>=seconds (e.g. PYATTN_GPU_LIMIT_BUILD=300),
# PYATTN_GPU_OUT=dir (copy the report there after every write, and the logs at the end:
# for a machine that only hands back one folder), CUDA_HOME (compute-sanitizer),
# PYATTN_GPU_FOCUS (empty: everything; word2vec: see above).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# The steps' scripts (cuda_check.py and sanitize_ops.py under $LOGS, bench/word2vec_cuda.py)
# import the in-place build, which is not installed: put the checkout on their path.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python}
NPROC=$(nproc)

die() { echo "gpu_check: $*" >&2; exit 1; }
command -v nvidia-smi >/dev/null 2>&1 || die "nvidia-smi not found: this script needs an NVIDIA GPU"
gpu_query() { # gpu_query FIELD: one field of GPU 0, trimmed; empty if the driver lacks it
  nvidia-smi --query-gpu="$1" --format=csv,noheader -i 0 2>/dev/null | head -n1 | sed 's/^ *//; s/ *$//'
}
GPU_NAME=$(gpu_query name)
[[ -n "$GPU_NAME" ]] || die "nvidia-smi lists no GPU"
DRIVER=$(gpu_query driver_version)
GPU_MEM=$(gpu_query memory.total)
CC=$(gpu_query compute_cap) # "9.0"; drivers before about R510 do not have the field
if ! [[ "$CC" =~ ^[0-9]+\.[0-9]+$ ]]; then
  CC=$(timeout 30 "$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))' 2>/dev/null)
fi
# One arch instead of setup.py's default two halves the nvcc work, and all cores build.
if [[ -z "${TORCH_CUDA_ARCH_LIST:-}" && -n "$CC" ]]; then export TORCH_CUDA_ARCH_LIST=$CC; fi
export MAX_JOBS=${MAX_JOBS:-$NPROC}
VERSIONS=$(timeout 30 "$PYTHON" -c 'import sys, torch
print(f"torch {torch.__version__}, CUDA (torch) {torch.version.cuda}, python {sys.version.split()[0]}")' \
  2>&1 | tail -n1)
NVCC_V=$( (command -v nvcc >/dev/null && nvcc --version | sed -n 's/.*release \(.*\),.*/\1/p') || echo "not found")
SANITIZER=$(command -v compute-sanitizer || true)
for d in "${CUDA_HOME:-}" /usr/local/cuda; do
  if [[ -z "$SANITIZER" && -n "$d" && -x "$d/bin/compute-sanitizer" ]]; then SANITIZER="$d/bin/compute-sanitizer"; fi
done
SANITIZER_V=$( ([[ -n "$SANITIZER" ]] && "$SANITIZER" --version 2>/dev/null | tail -n1) || echo "not found")
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || COMMIT+=" (with local changes)"

# The CUDA cases: the device fixture's "cuda" parameter puts "cuda" in their ids. Not
# test_cuda_emulated.py: it runs the kernels on CPU threads, as CI does. The two named tests
# take no device parameter but need the GPU (a mask on another device; the build's archs).
CUDA_TESTS="cuda and not test_cuda_emulated or test_mask_on_other_device or test_build_info"
HARNESS=build/harness/attention_harness # the standalone harnesses, when carried (step 0)
LSTM_HARNESS=build/harness/lstm_harness
W2V=build/w2v # the word2vec step's corpus and evaluation files, when carried
FOCUS=${PYATTN_GPU_FOCUS:-}
case "$FOCUS" in
  "") TEST_PATHS=(tests) ;;
  word2vec) TEST_PATHS=(tests/test_word2vec.py tests/test_negative_sampling.py) ;;
  *) die "PYATTN_GPU_FOCUS=$FOCUS: expected empty or word2vec" ;;
esac

SLUG=$(echo "$GPU_NAME" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-+|-+$//g')
DATE=$(date +%Y-%m-%d)
NAME="gpu_${SLUG}_${DATE}"
OUT="bench/results/$NAME"
LOGS="build/gpu_check/$NAME"
REPORT="bench/results/$NAME.md"
rm -rf "$LOGS" # an earlier run's logs (a JUnit file, say) must not pass for this run's
mkdir -p "$LOGS" "$OUT"
STARTED_AT=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
echo "gpu_check: $GPU_NAME (compute capability ${CC:-unknown}, driver $DRIVER); logs in $LOGS"

# ---- steps and their bookkeeping --------------------------------------------------------------
declare -a STEPS=()    # step names in the order they ran
declare -A LIMIT=() RC=() SECS=() NOTE=()
declare -a FAILED=()   # "step: why", for the summary and the exit code
CURRENT=""             # the step running now, if any
CURRENT_T0=0
STEP_PID=""            # its timeout process (the leader of the step's process group)
STATE="in progress"    # the report's status line

limit_for() { # limit_for STEP DEFAULT_S: the step's time limit, PYATTN_GPU_LIMIT_<STEP> if set
  local var="PYATTN_GPU_LIMIT_${1^^}"
  echo "${!var:-$2}"
}

status_of() { # the result column of a step's row
  local rc=${RC[$1]:-}
  if [[ "$1" == "$CURRENT" ]]; then
    echo "RUNNING when this report was written"
  elif [[ -z "${LIMIT[$1]:-}" ]]; then
    echo "not reached yet"
  elif [[ -n "${NOTE[$1]:-}" ]]; then
    echo "${NOTE[$1]}"
  elif ((rc == 0)); then
    echo "ok"
  elif ((rc == 124 || (rc == 137 && SECS[$1] >= LIMIT[$1]))); then
    echo "TIMED OUT"
  elif ((rc > 128)); then
    echo "FAILED: killed by SIG$(kill -l $((rc - 128)) 2>/dev/null || echo "$((rc - 128))")"
  else
    echo "FAILED (exit $rc)"
  fi
}

run_step() { # run_step STEP DEFAULT_LIMIT_S CMD...: CMD under its limit, output to $LOGS/STEP.log
  local name=$1 limit
  limit=$(limit_for "$1" "$2")
  shift 2
  STEPS+=("$name")
  LIMIT[$name]=$limit
  CURRENT=$name
  CURRENT_T0=$SECONDS
  write_report
  echo "=== $name (limit $limit s; log $LOGS/$name.log)"
  # In the background and waited for, because bash runs a trap only after the foreground
  # command ends: this way an INT or TERM to the script is handled at once (on_signal).
  timeout -k 10 "$limit" "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  STEP_PID=$!
  wait "$STEP_PID"
  local rc=$?
  STEP_PID=""
  CURRENT=""
  RC[$name]=$rc
  SECS[$name]=$((SECONDS - CURRENT_T0))
  echo "=== $name: $(status_of "$name") (${SECS[$name]} s)"
  if ((rc != 0)); then
    FAILED+=("$name: $(status_of "$name")")
    tail -n 15 "$LOGS/$name.log" | awk '{ print "    " $0 }' # awk: ends a last line cut off mid-way
  fi
  write_report
}

skip_step() { # skip_step STEP DEFAULT_LIMIT_S WHY [fail]: a step that is not run; fail counts it
  STEPS+=("$1")
  LIMIT[$1]=$(limit_for "$1" "$2")
  NOTE[$1]="not run: $3"
  if [[ "${4:-}" == fail ]]; then FAILED+=("$1: not run: $3"); fi
  echo "=== $1: not run: $3"
  write_report
}

# ---- the report ----------------------------------------------------------------------------
log_grep() { # log_grep STEP REGEX: the last line of a step's log that matches
  local log="$LOGS/$1.log" line=""
  if [[ -f "$log" ]]; then line=$(grep -E "$2" "$log" | tail -n 1); fi
  echo "${line:-(none)}"
}

write_report() {
  local s
  {
    echo "# pyattn GPU check: $GPU_NAME, $DATE"
    echo
    echo "- Status: $STATE (written $(date -u '+%H:%M:%S UTC'); started $STARTED_AT)"
    echo "- Device: $GPU_NAME, compute capability ${CC:-unknown}, ${GPU_MEM:-? MiB}; driver $DRIVER; $NPROC CPU cores"
    echo "- Versions: $VERSIONS; nvcc $NVCC_V; compute-sanitizer $SANITIZER_V"
    echo "- Commit: $COMMIT${FOCUS:+; focus: $FOCUS (PYATTN_GPU_FOCUS)}"
    if [[ "${PYATTN_GPU_SKIP_BUILD:-0}" == 1 ]]; then
      echo "- Build: reused (PYATTN_GPU_SKIP_BUILD=1)"
    else
      echo "- Build: TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-(setup.py default: 8.0;9.0)}, MAX_JOBS=$MAX_JOBS"
    fi
    echo "- Produced by \`scripts/gpu_check.sh\`; logs in \`$LOGS/\` on the machine that ran it;" \
      "bench results.json and plot in \`$OUT/\`"
    echo
    echo "## Steps"
    echo
    echo "| step | limit (s) | exit | time (s) | result |"
    echo "| --- | ---: | ---: | ---: | --- |"
    for s in "${STEPS[@]}"; do
      if [[ "$s" == "$CURRENT" ]]; then
        echo "| $s | ${LIMIT[$s]} | | $((SECONDS - CURRENT_T0)) so far | $(status_of "$s") |"
      else
        echo "| $s | ${LIMIT[$s]} | ${RC[$s]:-} | ${SECS[$s]:-} | $(status_of "$s") |"
      fi
    done
    echo
    if ((${#FAILED[@]})); then
      for s in "${FAILED[@]}"; do echo "- FAILED: $s"; done
    elif [[ "$STATE" == complete ]]; then
      echo "All steps passed."
    fi
    if [[ -f "$LOGS/harness.log" ]]; then
      echo
      echo "## Standalone harness (\`$HARNESS --quick\`: tile variants against a double-precision reference, then timed)"
      echo
      echo '```'
      grep -E '^(seed|device|ceiling|check|time|all checks|SOME)' "$LOGS/harness.log"
      echo '```'
    fi
    if [[ -f "$LOGS/lstm_harness.log" ]]; then
      echo
      echo "## LSTM harness (\`$LSTM_HARNESS --quick\`: persistent kernels against a double reference, then timed)"
      echo
      echo '```'
      grep -E '^(seed|device|check|time|all checks|SOME)' "$LOGS/lstm_harness.log"
      echo '```'
    fi
    if [[ -f "$LOGS/cuda_check.log" ]]; then
      echo
      echo "## Build facts (cuda_check)"
      echo
      echo '```'
      tail -n 20 "$LOGS/cuda_check.log"
      echo '```'
    fi
    if [[ -f "$LOGS/tests.log" ]]; then
      echo
      echo "## Tests (the CUDA cases: \`pytest ${TEST_PATHS[*]} -k \"$CUDA_TESTS\" -n $NPROC\`)"
      echo
      "$PYTHON" scripts/summarize_pytest.py --log "$LOGS/tests.log" --junit "$LOGS/tests.xml" 2>&1 ||
        echo "(scripts/summarize_pytest.py failed: see $LOGS/tests.log)"
    fi
    if [[ -f "$LOGS/memcheck.log" || -f "$LOGS/racecheck.log" ]]; then
      echo
      echo "## compute-sanitizer (pyattn's kernels: softmax sk = 1 .. 70001, attention, packed LSTMs;" \
        "aligned and offset views, masks, causal, 4 dtypes; negative-sampling updates and sgns_loss;" \
        "racecheck with fewer rows${FOCUS:+; focus $FOCUS: its ops only})"
      echo
      echo '```'
      for s in memcheck racecheck; do
        echo "$s: $(status_of "$s"); summary: $(log_grep "$s" '(ERROR|RACECHECK) SUMMARY');" \
          "got to: $(log_grep "$s" '^sanitize_ops:')"
      done
      echo '```'
    fi
    # What the logs say about a failed build or sanitizer run (the logs stay on the machine):
    # the sanitizer's first reports ("=========" lines), then the log's last lines.
    for s in build memcheck racecheck; do
      if [[ -f "$LOGS/$s.log" && "${RC[$s]:-0}" != 0 ]]; then
        echo
        echo "## $s log: $(status_of "$s")"
        echo
        echo '```'
        grep -m 40 '^=========' "$LOGS/$s.log" && echo "..."
        tail -n 25 "$LOGS/$s.log"
        echo '```'
      fi
    done
    if [[ -f "$LOGS/bench.log" ]]; then
      echo
      echo "## Benchmark (\`python -m pyattn.bench --quick --device cuda\`)"
      echo
      echo '```'
      grep -v '%|' "$LOGS/bench.log" # drop tqdm's progress lines
      echo '```'
    fi
    if [[ -f "$OUT/word2vec_cuda.md" ]]; then
      echo
      echo "## word2vec (\`bench/word2vec_cuda.py\`)"
      echo
      sed 's/^# /### /' "$OUT/word2vec_cuda.md"
    elif [[ -f "$LOGS/word2vec.log" ]]; then
      echo
      echo "## word2vec (\`bench/word2vec_cuda.py\`): no results file; the log's end"
      echo
      echo '```'
      tail -n 25 "$LOGS/word2vec.log"
      echo '```'
    fi
  } >"$REPORT.tmp"
  mv -f "$REPORT.tmp" "$REPORT" # whole or not at all, should a kill land mid-write
  if [[ -n "${PYATTN_GPU_OUT:-}" ]]; then cp -f "$REPORT" "$PYATTN_GPU_OUT/" 2>/dev/null; fi
}

# shellcheck disable=SC2329 # run by the traps below
on_signal() { # on_signal NAME: stop the running step, then exit (on_exit writes the report)
  STATE="INTERRUPTED by SIG$1"
  # timeout passes the signal on to the step's whole process group.
  if [[ -n "$STEP_PID" ]]; then kill -TERM "$STEP_PID" 2>/dev/null; fi
  if [[ "$1" == INT ]]; then exit 130; else exit 143; fi
}

# shellcheck disable=SC2329 # run by the EXIT trap
on_exit() {
  local rc=$?
  trap - INT TERM HUP
  if [[ -n "$CURRENT" ]]; then # stopped during a step
    RC[$CURRENT]=$rc
    SECS[$CURRENT]=$((SECONDS - CURRENT_T0))
    NOTE[$CURRENT]="INTERRUPTED"
    FAILED+=("$CURRENT: interrupted")
    CURRENT=""
  fi
  if [[ "$STATE" == "in progress" ]]; then STATE="complete"; fi
  write_report
  if [[ -n "${PYATTN_GPU_OUT:-}" ]]; then # next to the report: <name>/ (bench) and <name>_logs/
    cp -rf "$OUT" "$PYATTN_GPU_OUT/" 2>/dev/null
    cp -rf "$LOGS" "$PYATTN_GPU_OUT/${NAME}_logs" 2>/dev/null
  fi
  echo "gpu_check: wrote $REPORT ($STATE)"
  if ((${#FAILED[@]})); then printf 'gpu_check: FAILED %s\n' "${FAILED[@]}"; else echo "gpu_check: all steps passed"; fi
}
trap on_exit EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

# ---- 0. the standalone harness ------------------------------------------------------------------
# bench/cuda/attention_harness.cu needs neither torch nor the extension: built here by
# bench/cuda/build_harness.sh (about 2 minutes on 2 cores) and carried, it checks and times
# the attention kernels' tile variants before the build. Not built on the lent machine.
if [[ -n "$FOCUS" ]]; then
  skip_step harness 120 "focus $FOCUS"
  skip_step lstm_harness 40 "focus $FOCUS"
elif [[ -x "$HARNESS" ]]; then
  run_step harness 120 "$HARNESS" --quick
else
  skip_step harness 120 "$HARNESS not found (build it with bench/cuda/build_harness.sh and carry build/harness)"
fi
# bench/cuda/lstm_harness.cu: the persistent LSTM kernels against a double reference, then
# timed at T 100 (batches 8 and 64 with --quick).
if [[ -n "$FOCUS" ]]; then
  : # skipped above
elif [[ -x "$LSTM_HARNESS" ]]; then
  run_step lstm_harness 40 "$LSTM_HARNESS" --quick
else
  skip_step lstm_harness 40 "$LSTM_HARNESS not found (build it with bench/cuda/build_harness.sh and carry build/harness)"
fi

# ---- 1. build ---------------------------------------------------------------------------------
if [[ "${PYATTN_GPU_SKIP_BUILD:-0}" == 1 ]]; then
  skip_step build 180 "PYATTN_GPU_SKIP_BUILD=1 (the built extension is reused)"
else
  # dev_build.sh runs setup.py, which keeps TORCH_CUDA_ARCH_LIST if set; torch's ninja
  # build runs MAX_JOBS compiles at once.
  run_step build 180 env PYATTN_FORCE_CUDA=1 bash scripts/dev_build.sh
fi

cat >"$LOGS/cuda_check.py" <<'EOF'
import torch
import pyattn

info = pyattn.build_info()
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
print("pyattn.build_info()", info)
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
assert info.get("cuda"), "pyattn was built without CUDA"
EOF
run_step cuda_check 20 "$PYTHON" "$LOGS/cuda_check.py"
if [[ "${RC[cuda_check]}" == 0 ]]; then CUDA_OK=1; else CUDA_OK=0; fi

# ---- 2. tests ---------------------------------------------------------------------------------
if ((CUDA_OK)) && ! "$PYTHON" -c "import xdist" 2>/dev/null; then
  # Without network this fails within seconds rather than retrying.
  timeout 30 "$PYTHON" -m pip install -q --disable-pip-version-check --retries 0 --timeout 5 pytest-xdist \
    >"$LOGS/pip_xdist.log" 2>&1
fi
if ! ((CUDA_OK)); then
  skip_step tests 120 "cuda_check failed" fail
elif ! "$PYTHON" -c "import xdist" 2>/dev/null; then
  skip_step tests 120 "pytest-xdist is not installed (pip install -r requirements-dev.txt)" fail
else
  # Where any C++ exception thrown by the extension kills the process, each test that
  # expects an error takes its worker down. xdist reports that test as crashed, starts a
  # new worker and goes on; --max-worker-restart (above the number of CUDA cases) keeps it
  # from giving up. -v prints each outcome as it comes, so a timed-out run can still be
  # summarised; the JUnit file (written at the end) adds the messages.
  # -p no:benchmark: the tests use no benchmark fixture, and it warns once per worker.
  run_step tests "$( [[ -n "$FOCUS" ]] && echo 90 || echo 120)" "$PYTHON" -m pytest "${TEST_PATHS[@]}" -k "$CUDA_TESTS" -n "$NPROC" --max-worker-restart 5000 \
    -v -rfE --tb=short -p no:benchmark --junitxml "$LOGS/tests.xml"
fi

# ---- 3. compute-sanitizer -------------------------------------------------------------------
# The ops on awkward shapes: sk = 1, odd, just past the warp-kernel limit, long rows
# (register, shared-memory and re-read paths), a misaligned view (scalar path), masks,
# causal, every dtype. PYATTN_SANITIZE_SMALL=1 keeps every shape's kernel path but with
# fewer rows and heads: racecheck instruments every shared-memory access and is the slow one.
cat >"$LOGS/sanitize_ops.py" <<'EOF'
import os

import torch
import pyattn  # registers torch.ops.pyattn

SMALL = os.environ.get("PYATTN_SANITIZE_SMALL") == "1"
ops = torch.ops.pyattn
dev = "cuda"
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def done(what):  # progress, so that a timed-out run shows how far it got
    print(f"sanitize_ops: {what}", flush=True)


# negative sampling: the stream updates (skip-gram pairs, its window batch, CBOW) on tables
# with padded rows as the trainer's, dim 37 (a partial last pass over the lanes), negatives
# from an alias table and from an id table, a busy vocabulary of 50; sgns_loss and its
# gradients. The updates take fp32 and fp64.
from pyattn.word2vec.model import alias_table

vocab, dim, k, window = 50, 37, 5, 3
n = 64 if SMALL else 400
for dtype in (torch.float32, torch.float64):
    tokens = torch.randint(0, vocab, (n,), device=dev)
    sentence = torch.sort(torch.randint(0, n // 20, (n,), device=dev)).values
    radius = torch.randint(1, window + 1, (n,), device=dev)
    tables = (alias_table(torch.rand(vocab).double().numpy() + 0.1).to(dev), torch.randint(0, vocab, (100,), device=dev))
    for cbow, batch in ((False, False), (False, True), (True, False)):
        for table in tables:
            w_in, w_out = ((torch.randn(vocab, dim + 11, device=dev, dtype=dtype) * 0.3)[:, :dim] for _ in range(2))
            args = (w_in, w_out, tokens, sentence, radius, 3, n - 2, window, None, table, k, 0.05, 7, True, 0)
            loss = ops.cbow_stream_update_(*args) if cbow else ops.sgns_stream_update_(*args, batch)
            torch.cuda.synchronize()
            assert torch.isfinite(loss) and torch.isfinite(w_in).all() and torch.isfinite(w_out).all(), (dtype, cbow)
    w_in = torch.randn(vocab, dim, device=dev, dtype=dtype, requires_grad=True)
    w_out = torch.randn(vocab, dim, device=dev, dtype=dtype, requires_grad=True)
    centers, contexts = torch.randint(0, vocab, (n,), device=dev), torch.randint(0, vocab, (n,), device=dev)
    negatives = torch.randint(0, vocab, (n, k), device=dev)
    pyattn.functional.sgns_loss(w_in, w_out, centers, contexts, negatives).backward()
    torch.cuda.synchronize()
    assert torch.isfinite(w_in.grad).all() and torch.isfinite(w_out.grad).all(), dtype
    done(f"negative sampling {dtype}")
if os.environ.get("PYATTN_SANITIZE_ONLY") == "word2vec":  # PYATTN_GPU_FOCUS=word2vec
    done("all done")
    raise SystemExit(0)

b, h, sq = (1, 2, 2) if SMALL else (2, 2, 3)
for dtype in DTYPES:
    for sk in (1, 7, 32, 100, 1024, 1025, 20000, 70001):
        base = torch.randn(b, h, sq, sk + 1, device=dev, dtype=dtype)
        for x in (base[..., :sk].contiguous(), base[..., 1:]):  # aligned, then offset by one
            bmask = torch.rand(b, 1, sq, sk, device=dev) < 0.3
            amask = torch.randn(1, h, sq, sk, device=dev, dtype=dtype)
            for mask, causal in ((None, False), (bmask, True), (amask, False)):
                y = ops.scaled_masked_softmax_fwd(x, mask, 0.5, causal)
                dy = torch.randn_like(y)
                dx = ops.scaled_masked_softmax_bwd(y, dy, 0.5)
                torch.cuda.synchronize()
                assert torch.isfinite(y).all() and torch.isfinite(dx).all(), (dtype, sk)
    done(f"softmax {dtype}")
# attention: odd lengths past a block, GQA, dv != d, every mask kind, lq = 1, every dtype.
shapes = ((1, 2, 1, 65, 130, 64, 48) if SMALL else (2, 4, 2, 65, 130, 64, 48),
          (1, 2, 1, 1, 37, 100, 128), (1, 1, 1, 70, 33, 7, 5))
for dtype in DTYPES:
    for (b, hq, hkv, lq, lk, d, dv) in shapes:
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
    done(f"attention {dtype}")
# lstm: packed sequences both ways, batch 3 (the persistent loop) and 12 (per step).
steps = 4 if SMALL else 7
for dtype in DTYPES:
    for n in (3, 12):
        lstm = pyattn.nn.LSTM(24, 40, num_layers=2, bidirectional=True, device=dev, dtype=dtype)
        x = torch.randn(steps, n, 24, device=dev, dtype=dtype, requires_grad=True)
        lengths = torch.sort(torch.randint(1, steps + 1, (n,)), descending=True).values
        lengths[0] = steps
        y, (hn, cn) = lstm(torch.nn.utils.rnn.pack_padded_sequence(x, lengths))
        (y.data.sum() + hn.sum() + cn.sum()).backward()
        torch.cuda.synchronize()
        assert torch.isfinite(x.grad).all(), (dtype, n)
    done(f"lstm {dtype}")
done("all done")
EOF
if ! ((CUDA_OK)); then
  skip_step memcheck 60 "cuda_check failed" fail
  skip_step racecheck 60 "cuda_check failed" fail
elif [[ -z "$SANITIZER" ]]; then
  skip_step memcheck 60 "compute-sanitizer not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)" fail
  skip_step racecheck 60 "compute-sanitizer not found" fail
else
  # --kernel-name kns=pyattn: only pyattn's kernels (all in namespace pyattn) are
  # instrumented; torch's own (randn, the checks) run at full speed.
  SAN_ARGS=(--error-exitcode 1 --print-limit 100)
  if "$SANITIZER" --help 2>&1 | grep -q -- '--kernel-name'; then SAN_ARGS+=(--kernel-name kns=pyattn); fi
  # memcheck without the caching allocator, so out-of-bounds accesses are not hidden
  # inside pooled blocks; racecheck looks at shared memory only and keeps the cache.
  # PYATTN_SANITIZE_ONLY=word2vec: the negative-sampling ops alone (a focused run).
  SAN_LIMIT=$( [[ -n "$FOCUS" ]] && echo 45 || echo 60)
  run_step memcheck "$SAN_LIMIT" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 PYATTN_SANITIZE_ONLY="$FOCUS" \
    "$SANITIZER" --tool memcheck "${SAN_ARGS[@]}" "$PYTHON" "$LOGS/sanitize_ops.py"
  run_step racecheck "$SAN_LIMIT" env PYATTN_SANITIZE_SMALL=1 PYATTN_SANITIZE_ONLY="$FOCUS" \
    "$SANITIZER" --tool racecheck "${SAN_ARGS[@]}" "$PYTHON" "$LOGS/sanitize_ops.py"
fi

# ---- 4. benchmarks ----------------------------------------------------------------------------
if [[ -n "$FOCUS" ]]; then
  skip_step bench 60 "focus $FOCUS"
elif ((CUDA_OK)); then
  run_step bench 60 "$PYTHON" -m pyattn.bench --quick --device cuda --out "$OUT"
else
  skip_step bench 60 "cuda_check failed" fail
fi
# word2vec on a real corpus (issue 15): bench/cuda/carry_word2vec.sh puts a gzipped corpus
# and the evaluation files in build/w2v/; carry that folder. Optional in a full run,
# required with the word2vec focus.
W2V_FILES=("$W2V/corpus.txt.gz" "$W2V/wordsim353.tsv" "$W2V/questions-words.txt")
if ! ls "${W2V_FILES[@]}" >/dev/null 2>&1; then
  skip_step word2vec 150 "$W2V/ not carried (bench/cuda/carry_word2vec.sh)" "$( [[ -n "$FOCUS" ]] && echo fail)"
elif ! ((CUDA_OK)); then
  skip_step word2vec 150 "cuda_check failed" fail
else
  gunzip -c "$W2V/corpus.txt.gz" >"$LOGS/corpus.txt"
  run_step word2vec 150 "$PYTHON" bench/word2vec_cuda.py "$LOGS/corpus.txt" --wordsim "$W2V/wordsim353.tsv" \
    --analogies "$W2V/questions-words.txt" --out "$OUT/word2vec_cuda.md"
fi

# on_exit writes the final report and prints the summary.
exit $((${#FAILED[@]} ? 1 : 0))
