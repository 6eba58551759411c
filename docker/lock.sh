#!/usr/bin/env bash
# Regenerate docker/requirements.lock: every Python dependency of the image and of the dev venv,
# pinned with --hash, for Linux x86_64 / CPython 3.11.
#
#   make lock            (calls this script)
#   bash docker/lock.sh  [--check]   (--check: exit 1 if the committed lock is out of date)
#
# Inputs: setup.cfg's install_requires + the `test` extra, the build backend from pyproject.toml
# (setuptools, wheel: the image builds the convkit wheel with --no-build-isolation so the backend is
# hash-checked too), and the exact pins in PINS below. Everything else resolves to the newest release
# inside setup.cfg's ranges. uv is installed into a throwaway venv (or reused from $UV if set).
#
# Machines of this project keep some PyPI wheels on local disk (/opt/pypi-more/files, /opt/wheels)
# and pip is configured to find them. Those are byte-identical copies of PyPI's files today; if one
# ever differs, its hash is appended to the requirement (pip accepts several --hash per line) so that
# `pip install --require-hashes -r docker/requirements.lock` keeps working on those machines too.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out="$root/docker/requirements.lock"
check=0
[[ "${1:-}" == "--check" ]] && check=1

# Exact versions the project is tested with (upper bounds inside setup.cfg's ranges).
PINS=(
  "torch==2.14.1"
  "torchvision==0.29.1"
  "onnxruntime-gpu==1.31.1"
)
LOCAL_WHEEL_DIRS=${LOCAL_WHEEL_DIRS:-"/opt/pypi-more/files /opt/wheels"}
INDEX_URL=${LOCK_INDEX_URL:-https://pypi.org/simple}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ -z "${UV:-}" ]]; then
  python3 -m venv "$work/uv-venv"
  "$work/uv-venv/bin/pip" install --quiet --disable-pip-version-check uv
  UV="$work/uv-venv/bin/uv"
fi
# TLS to PyPI may be re-signed by a proxy: use the system CA bundle rather than uv's built-in roots.
if [[ -z "${SSL_CERT_FILE:-}" && -f /etc/ssl/certs/ca-certificates.crt ]]; then
  export SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
fi

# requirements.in from setup.cfg (install_requires + extras test, ray) and pyproject's build backend.
python3 - "$root" > "$work/requirements.in" <<'PY'
import configparser, sys, pathlib, re
root = pathlib.Path(sys.argv[1])
cfg = configparser.ConfigParser()
cfg.read(root / "setup.cfg")
def reqs(text):
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            yield line
print("# from setup.cfg [options] install_requires")
for r in reqs(cfg["options"]["install_requires"]):
    print(r)
for extra in ("test", "ray"):
    print(f"# from setup.cfg [options.extras_require] {extra}")
    for r in reqs(cfg["options.extras_require"][extra]):
        print(r)
print("# build backend (pyproject.toml [build-system] requires)")
pp = (root / "pyproject.toml").read_text()
m = re.search(r"requires\s*=\s*\[([^\]]*)\]", pp)
for r in re.findall(r'"([^"]+)"', m.group(1) if m else ""):
    print(r)
PY
printf '%s\n' "${PINS[@]}" > "$work/pins.txt"

# Relative paths so the lock's "# via" annotations don't name a temp dir.
(cd "$work" && "$UV" pip compile requirements.in \
  --constraint pins.txt \
  --generate-hashes \
  --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 \
  --index-url "$INDEX_URL" \
  --no-header --quiet \
  --output-file body.txt)

# Add hashes of on-disk copies of pinned wheels whose hash is not PyPI's (see above).
python3 - "$work/body.txt" $LOCAL_WHEEL_DIRS <<'PY'
import hashlib, pathlib, re, sys
body = pathlib.Path(sys.argv[1])
text = body.read_text()
def norm(n): return re.sub(r"[-_.]+", "-", n).lower()
pins = {norm(m.group(1)): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^ \\\n]+)", text, re.M)}
for d in sys.argv[2:]:
    p = pathlib.Path(d)
    if not p.is_dir():
        continue
    for whl in sorted(p.glob("*.whl")):
        name, version = whl.name.split("-")[:2]
        if pins.get(norm(name)) != version or "cp311" not in whl.name and "py3" not in whl.name:
            continue
        h = hashlib.sha256(whl.read_bytes()).hexdigest()
        if h in text:
            continue
        print(f"lock.sh: adding hash of local {whl} (differs from the index's)", file=sys.stderr)
        pat = re.compile(rf"^({re.escape(name)}|{re.escape(norm(name))})=={re.escape(version)} \\\n", re.M | re.I)
        text, n = pat.subn(lambda m: m.group(0) + f"    --hash=sha256:{h} \\\n", text, count=1)
        if not n:
            sys.exit(f"lock.sh: could not place hash for {whl.name}")
body.write_text(text)
PY

{
  cat <<EOF
# convkit: pinned, hash-checked Python dependencies of the container image and the dev venv.
# Linux x86_64, CPython 3.11 (manylinux_2_28). Includes torch's nvidia-* CUDA 13 wheels and the
# build backend (setuptools, wheel) used to build the convkit wheel without build isolation.
#
# DO NOT EDIT BY HAND. Regenerate with:  make lock   (runs: bash docker/lock.sh)
# Inputs: setup.cfg install_requires + extras [test] and [ray], pyproject build-system requires, and pins
#   $(IFS=' '; echo "${PINS[*]}")
# Install:  pip install --require-hashes -r docker/requirements.lock
EOF
  cat "$work/body.txt"
} > "$work/requirements.lock"

if (( check )); then
  if diff -u "$out" "$work/requirements.lock"; then
    echo "docker/requirements.lock is up to date"
  else
    echo "docker/requirements.lock is out of date: run make lock" >&2
    exit 1
  fi
else
  mv "$work/requirements.lock" "$out"
  echo "wrote $out ($(grep -cE '^[a-z0-9]' "$out") packages)"
fi
