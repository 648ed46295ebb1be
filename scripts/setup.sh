#!/usr/bin/env bash
# One set-up step for README's commands and for CI (issue 2).
#
#   bash scripts/setup.sh [--gpu | --cpu]
#
# Creates .venv in the repository, installs the dependencies pinned in setup.cfg,
# builds Horovod 0.28.1 from source with its TensorFlow ops and the Gloo controller
# (and MPI when an MPI is installed), installs Debian's dataset-fashion-mnist when it is
# missing and we may install packages, then checks the result. Idempotent: with
# everything in place it only re-checks and finishes in seconds.
#
# --gpu installs tensorflow==2.15.1 instead of tensorflow-cpu==2.15.1 (GPU clusters); the
# choice is remembered, so README's demo.sh and test.sh (which call this without options) keep
# it. --cpu switches back.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
FMNIST_DIR="/usr/share/datasets/fashion-mnist"
STAMP="$VENV/.deps-stamp"
GPU=""
for arg in "$@"; do
  case "$arg" in
    --gpu) GPU=1 ;;
    --cpu) GPU=0 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "setup: unknown option '$arg' (valid: --gpu, --cpu)" >&2; exit 2 ;;
  esac
done
if [ -z "$GPU" ]; then
  # No option: keep what an earlier set-up installed (demo.sh and test.sh pass none).
  GPU=0
  if [ -f "$STAMP" ] && grep -q "gpu=1" "$STAMP"; then GPU=1; fi
fi

step() { echo "[setup] $*"; }
# pip, quiet unless it fails (then minus the noise of this machine's optional local package folders).
# (Always called as `pip_quiet ... || fail ...`, so set -e does not stop it early.)
pip_quiet() {
  local log rc
  log="$(mktemp)"
  "$PY" -m pip "$@" >"$log" 2>&1
  rc=$?
  # On success pip's output is only warnings (setuptools' editable-install banner and the
  # like); on failure it is the reason, so show it.
  [ "$rc" -eq 0 ] || grep -v "is ignored: it is neither a file nor a directory" "$log" || true
  rm -f "$log"
  return "$rc"
}
fail() { echo "[setup] FAILED at step: $*" >&2; exit 1; }

# Only the pins in setup.cfg are the truth; read them from there.
pins() {
  python3 - "$ROOT/setup.cfg" "$GPU" <<'PYEOF'
import configparser, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
gpu = sys.argv[2] == "1"
for line in cfg["options"]["install_requires"].strip().splitlines():
    line = line.strip()
    if not line or line.startswith("horovod"):
        continue
    if gpu and line.startswith("tensorflow-cpu"):
        line = line.replace("tensorflow-cpu", "tensorflow", 1)
    print(line)
PYEOF
}

# ---- 1. virtual environment -------------------------------------------------------
if [ ! -x "$PY" ]; then
  step "1/5 creating virtual environment at .venv"
  python3 -m venv "$VENV" || fail "1/5 venv (is python3-venv installed?)"
  pip_quiet install -q --upgrade pip setuptools wheel || fail "1/5 pip upgrade"
fi

# ---- 2. pinned Python dependencies -------------------------------------------------
WANT="$(pins | sort | tr '\n' ' ') gpu=$GPU"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  step "2/5 installing pinned dependencies: $WANT"
  # tensorflow and tensorflow-cpu install the same module: remove the other one first, or
  # uninstalling either later would break both
  OTHER_TF=tensorflow; [ "$GPU" = 1 ] && OTHER_TF=tensorflow-cpu
  if "$PY" -m pip show -q "$OTHER_TF" >/dev/null 2>&1; then
    pip_quiet uninstall -y -q "$OTHER_TF" || fail "2/5 pip uninstall $OTHER_TF"
  fi
  # shellcheck disable=SC2046
  pip_quiet install -q $(pins) || fail "2/5 pip install of the pinned dependencies"
  echo "$WANT" > "$STAMP"
else
  step "2/5 pinned dependencies already installed"
fi

# ---- 3. Horovod, built against this TensorFlow ----------------------------------
# On GPU machines with NCCL, Horovod's GPU allreduce should use it (Goyal et al.'s recipe is
# bandwidth-bound on gradients); elsewhere Gloo on host memory.
WANT_NCCL=0
if [ "$GPU" = 1 ] && { [ -n "${HOROVOD_NCCL_HOME:-}" ] || ldconfig -p 2>/dev/null | grep -q 'libnccl\.so'; }; then
  WANT_NCCL=1
fi
horovod_ok() {
  "$PY" -c "import horovod, sys; sys.exit(horovod.__version__ != '0.28.1')" 2>/dev/null &&
  "$PY" -c "import sys, horovod.tensorflow as h; sys.exit(int($WANT_NCCL and not h.nccl_built()))" 2>/dev/null
}
if ! horovod_ok; then
  step "3/5 building horovod==0.28.1 with TensorFlow + Gloo (takes about 3 minutes)"
  MPI_FLAG=HOROVOD_WITHOUT_MPI=1
  if command -v mpicc >/dev/null 2>&1 || command -v mpirun >/dev/null 2>&1; then
    MPI_FLAG=HOROVOD_WITH_MPI=1
    step "    an MPI was found: building the MPI controller too"
  fi
  [ "$WANT_NCCL" = 1 ] && step "    NCCL was found: building GPU allreduce with NCCL"
  # an installed but unusable Horovod (another TensorFlow, no NCCL) must be rebuilt, not kept
  REINSTALL=()
  "$PY" -m pip show -q horovod >/dev/null 2>&1 && REINSTALL=(--force-reinstall --no-deps)
  (
    export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 "$MPI_FLAG" \
           HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
    [ "$WANT_NCCL" = 1 ] && export HOROVOD_GPU_OPERATIONS=NCCL
    pip_quiet install -q --no-cache-dir --no-build-isolation ${REINSTALL[@]+"${REINSTALL[@]}"} horovod==0.28.1
  ) || fail "3/5 horovod build (needs cmake and g++; see ../shared/reference/ENVIRONMENT.md)"
  horovod_ok || fail "3/5 horovod built but does not import with this TensorFlow$([ "$WANT_NCCL" = 1 ] && echo ' and NCCL')"
else
  step "3/5 horovod 0.28.1 already built"
fi

# ---- 4. this project, editable --------------------------------------------------------
if ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('fdenoise') is None)" 2>/dev/null \
   || [ ! -f "$VENV/.project-stamp" ] || [ "$ROOT/setup.cfg" -nt "$VENV/.project-stamp" ]; then
  step "4/5 installing this project (editable)"
  (cd "$ROOT" && pip_quiet install -q --no-deps --no-build-isolation -e .) || fail "4/5 pip install -e ."
  touch "$VENV/.project-stamp"
else
  step "4/5 project already installed"
fi

# ---- 5. Fashion-MNIST (the embedded default data set) ------------------------------
have_fmnist() {
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [ -f "$FMNIST_DIR/$f.gz" ] || [ -f "$FMNIST_DIR/$f" ] || return 1
  done
}
if have_fmnist; then
  step "5/5 Fashion-MNIST found in $FMNIST_DIR"
else
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; fi
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
    step "5/5 installing Debian's dataset-fashion-mnist"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
      || fail "5/5 apt-get install dataset-fashion-mnist"
    have_fmnist || fail "5/5 dataset-fashion-mnist installed but $FMNIST_DIR lacks the four IDX files"
  else
    step "5/5 Fashion-MNIST is not installed and packages cannot be installed here."
    step "    Get the four files {train,t10k}-{images-idx3,labels-idx1}-ubyte(.gz) and pass"
    step "    --data /path/to/that/dir to train.py and eval.py."
  fi
fi

# ---- check ------------------------------------------------------------------------------
step "checking the environment"
"$PY" - <<'PYEOF' || fail "check: imports / versions"
import tensorflow as tf, tensorpack, cv2, numpy, horovod
import horovod.tensorflow as hvd
assert tf.__version__ == "2.15.1", tf.__version__
assert tensorpack.__version__.startswith("0.11"), tensorpack.__version__
assert numpy.__version__ < "2", numpy.__version__
assert horovod.__version__ == "0.28.1", horovod.__version__
assert hvd.gloo_built(), "horovod was built without Gloo"
import fdenoise  # the project, with its TensorFlow-2 workarounds applied
print("[setup] tensorflow %s, tensorpack %s, numpy %s, opencv %s, horovod %s (gloo=%s, mpi=%s)" % (
    tf.__version__, tensorpack.__version__, numpy.__version__, cv2.__version__,
    horovod.__version__, hvd.gloo_built(), hvd.mpi_built()))
# low-precision kernels differ by CPU (oneDNN dispatches on these), so say which CPU this is
import platform, re
try:
    info = open("/proc/cpuinfo").read()
    model = re.search(r"model name\s*:\s*(.*)", info).group(1).strip()
    flags = set(re.search(r"flags\s*:\s*(.*)", info).group(1).split())
except (OSError, AttributeError):
    model, flags = platform.processor() or "unknown", set()
wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16", "f16c"]
print("[setup] cpu: %s; %s" % (model, " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"))
PYEOF
CHECK="$("$VENV/bin/horovodrun" --check-build 2>&1)" || fail "check: horovodrun --check-build"
echo "$CHECK" | grep -q "\[X\] TensorFlow" || { echo "$CHECK"; fail "check: horovodrun --check-build does not list TensorFlow"; }
echo "$CHECK" | grep -q "\[X\] Gloo" || { echo "$CHECK"; fail "check: horovodrun --check-build does not list Gloo"; }
step "ready: $VENV"
