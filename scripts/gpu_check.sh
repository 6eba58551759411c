#!/usr/bin/env bash
# The prepared GPU check, one command, at most 8 minutes on one GPU:
#
#   scripts/gpu_check.sh [--out-dir DIR] [--only EXPERIMENT ...] [--epochs N]   # on a GPU machine
#   scripts/gpu_check.sh --dry-run [--no-install]                              # same path, CPU, embedded sample
#
# Writes DIR/gpu_check.json and DIR/gpu_check.md (default DIR: gpu_check/ in the checkout; see
# scripts/gpu_check.py for what they hold). Works offline on a bare machine that has Python ≥ 3.11 with
# torch ≥ 2.11, torchvision, onnx, onnxruntime (CPU-only or -gpu), click, matplotlib, tqdm and setuptools (a
# virtualenv made from docker/requirements.lock has them all):
#   - convkit is installed from this checkout without network (pip --no-deps --no-build-isolation --no-index .;
#     on an externally managed Python, into devdata/.pylib), and always run as installed: never from the
#     checkout's convkit/ folder, which lacks the train/, export/ and evaluate/ subpackages setup.cfg maps in.
#     --no-install uses the convkit already installed (`make install`'s editable one, or the image's);
#   - the datasets are read from devdata/ (git-ignored): MNIST/raw and cifar10-jpeg.tar.gz;
#   - ONNX export needs onnxscript: when it is missing and devdata/wheels/ holds wheels, they are installed
#     into devdata/.pylib (put on PYTHONPATH); fill that folder on a machine with network:
#       pip download --no-deps --only-binary=:all: --python-version 3.12 \
#           --platform manylinux_2_28_x86_64 -d devdata/wheels 'onnxscript<0.8' onnx-ir ml-dtypes
#     (1.3 MB; onnx, numpy, packaging and typing_extensions are already there)
#     Without onnxscript the check trains and reports, and skips export and ONNX Runtime latency.
# Options other than --no-install go to scripts/gpu_check.py; relative paths are taken from the checkout. PYTHON selects the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
install=1
dry_run=0
args=()
for a in "$@"; do
  case "$a" in
    --no-install) install=0 ;;
    --dry-run) dry_run=1; args+=("$a") ;;
    *) args+=("$a") ;;
  esac
done
start=$(date +%s)

how="installed before (--no-install)"
log=$(mktemp "${TMPDIR:-/tmp}/convkit-gpu-check-pip.XXXXXX")
if [ "$install" = 1 ]; then
  if "$PY" -m pip install --quiet --no-deps --no-build-isolation --no-index . >"$log" 2>&1; then
    how="pip install --no-deps --no-build-isolation ."
  elif "$PY" -m pip install --quiet --no-deps --no-build-isolation --no-index --upgrade --target devdata/.pylib . \
      >>"$log" 2>&1; then  # an externally managed Python: into a folder of the checkout, not the system
    how="pip install --target devdata/.pylib ."
  else
    echo "error: pip could not install convkit offline ($(tail -n 1 "$log")); install setuptools, or install" \
      "convkit yourself (make install) and pass --no-install" >&2
    exit 2
  fi
  if ! "$PY" -c 'import onnxscript' 2>/dev/null && ls devdata/wheels/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --no-deps --no-index --upgrade --target devdata/.pylib devdata/wheels/*.whl \
      || echo "note: the wheels in devdata/wheels could not be installed; export will be skipped"
  fi
fi
rm -f "$log"
if [ -d devdata/.pylib ]; then export PYTHONPATH="$PWD/devdata/.pylib${PYTHONPATH:+:$PYTHONPATH}"; fi
# The installed convkit, imported from outside the checkout (where ./convkit would shadow it).
if ! (cd / && "$PY" -c 'import convkit.train, convkit.export, convkit.evaluate, convkit.cli') 2>/dev/null; then
  echo "error: convkit is not installed for $PY (import convkit.train failed outside the checkout); run" \
    "scripts/gpu_check.sh without --no-install, or make install" >&2
  exit 2
fi
if [ "$dry_run" = 0 ] && { [ ! -d devdata/MNIST/raw ] || [ ! -f devdata/cifar10-jpeg.tar.gz ]; }; then
  echo "error: the GPU check reads the datasets from devdata/ in the checkout; fill it with" >&2
  echo "  mkdir -p devdata && cp -r <data>/MNIST <data>/cifar10-jpeg.tar.gz devdata/" >&2
  echo "(<data>: the folder holding MNIST/raw and cifar10-jpeg.tar.gz)" >&2
  exit 2
fi
status=0
"$PY" scripts/gpu_check.py --install "$how" ${args[@]+"${args[@]}"} || status=$?
echo "gpu_check: $(( $(date +%s) - start )) s in all, exit $status"
exit $status
