# syntax=docker/dockerfile:1.7
# convkit: train CNNs with torch, export to ONNX, evaluate under ONNX Runtime (GPU or CPU).
#
#   docker build -t convkit .
#   docker run --rm --gpus all -v "$PWD/runs:/runs" -v "$DATA:/data" -v convkit-cache:/var/cache/convkit convkit train-all
#
# The CUDA runtime (cuBLAS, cuDNN, ...) comes from torch's nvidia-* wheels, so no CUDA base image is needed:
# a GPU host only needs the NVIDIA driver (≥ 580, for CUDA 13) and the NVIDIA Container Toolkit. See docker/README.md.
#
# BASE_IMAGE: the public base, pinned by digest (python:3.11-slim-bookworm, linux/amd64 index). The digest
# was taken from public references and could not be verified from the build machines (no registry access):
# re-pin with `docker buildx imagetools inspect python:3.11-slim-bookworm`. CI passes a Debian bookworm base
# it builds itself with debootstrap (docker/ci.sh); this file works on both (python at /usr/local/bin or
# /usr/bin, venv module built in or from python3-venv).
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# ------------------------------------------------------------------------------------------------- deps
# Stage 1: a venv at /opt/venv holding exactly docker/requirements.lock. Its layers depend on the lock
# alone, so the multi-GB torch/CUDA layer is rebuilt (and re-copied below) only when the lock changes.
FROM ${BASE_IMAGE} AS deps
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive

# Debian's python3 ships venv/ensurepip in python3-venv; the official python image has them built in.
RUN if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# The optional build secret `hostca` is a CA bundle for TLS-intercepting proxies:
#   docker build --secret id=hostca,src=/etc/ssl/certs/ca-certificates.crt .
# It is mounted for this step only and never lands in a layer.
COPY docker/requirements.lock /tmp/requirements.lock
RUN --mount=type=secret,id=hostca \
    if [ -s /run/secrets/hostca ]; then export PIP_CERT=/run/secrets/hostca; fi \
    && pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements.lock \
    && pip check

# ------------------------------------------------------------------------------------------------ wheel
# Stage 2: the convkit wheel, built with the locked setuptools/wheel (no build isolation, so nothing
# unpinned is fetched). Only this stage and the last layers of the runtime see source changes.
FROM deps AS wheel
COPY . /src
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist /src

# ---------------------------------------------------------------------------------------------- runtime
FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive

# torch.compile needs a toolchain at run time: Inductor compiles its CPU kernels with g++ (and hashes its
# precompiled headers with the `openssl` CLI), Triton builds its GPU launcher with gcc against Python.h.
# Python.h is in the official image; Debian's python3 needs python3-dev (which also brings python3 to a
# base that lacks it).
RUN python_dev=; \
    python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
        2>/dev/null || python_dev=python3-dev; \
    apt-get update \
    && apt-get install -y --no-install-recommends g++ openssl ${python_dev:+"$python_dev"} \
    && rm -rf /var/lib/apt/lists/*

# Non-root user with a fixed numeric UID/GID (written directly: minimal Debian bases have no useradd).
# The cache dir (decoded datasets, torch.compile/Triton kernels, matplotlib) is world-writable so the image
# also runs under `--user "$(id -u):$(id -g)"`; mount a volume there to keep it between runs.
RUN echo 'convkit:x:10001:10001:convkit:/home/convkit:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'convkit:x:10001:' >> /etc/group \
    && mkdir -p /home/convkit /data /runs /var/cache/convkit /opt/convkit \
    && chown 10001:10001 /home/convkit /data /runs \
    && chmod 1777 /var/cache/convkit

COPY --from=deps /opt/venv /opt/venv
COPY --from=wheel /dist /tmp/dist
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/dist/convkit-*.whl \
    && rm -rf /tmp/dist \
    && /opt/venv/bin/python -c 'import convkit; print("convkit", convkit.__version__)'
COPY docker/check_providers.py /opt/convkit/check_providers.py

# NVIDIA_REQUIRE_CUDA: the NVIDIA Container Toolkit refuses to start the container on a driver older than
# CUDA 13 needs (≥ 580), instead of torch quietly finding no GPU. NVIDIA_DRIVER_CAPABILITIES: compute
# (libcuda, PTX JIT) and utility (nvidia-smi, NVML) are all convkit uses; no graphics or video libraries.
ENV NVIDIA_REQUIRE_CUDA="cuda>=13.0" \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# LD_LIBRARY_PATH: let ONNX Runtime's CUDA provider find the CUDA/cuDNN libraries of torch's nvidia-* wheels
# even in a process that does not `import torch` first. The driver (libcuda.so.1) comes from the host.
ENV PATH=/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cu13/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/convkit \
    XDG_CACHE_HOME=/var/cache/convkit \
    TORCHINDUCTOR_CACHE_DIR=/var/cache/convkit/torchinductor \
    TRITON_CACHE_DIR=/var/cache/convkit/triton \
    MPLCONFIGDIR=/var/cache/convkit/matplotlib \
    MPLBACKEND=Agg \
    CONVKIT_DATA=/data \
    CONVKIT_CACHE=/var/cache/convkit/data \
    CONVKIT_RUNS=/runs

ARG VERSION=0.0.0
ARG VCS_REF=unknown
ARG SOURCE=https://example.invalid/convkit
LABEL org.opencontainers.image.title="convkit" \
      org.opencontainers.image.description="Train CNNs with torch, export to ONNX, evaluate under ONNX Runtime (CUDA or CPU)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 10001:10001
# /var/cache/convkit holds the torch.compile (Inductor) and Triton kernel caches: a volume there turns the
# ~1 min of compilation per model into a cache hit on the next run (and keeps the decoded datasets).
# Inductor's parallel compile workers: convkit uses min(8, CPUs of the container's quota) unless
# TORCHINDUCTOR_COMPILE_THREADS is set (`-e TORCHINDUCTOR_COMPILE_THREADS=N`): a number fixed here would be
# wrong for either a `--cpus 4` container or a 64-core host.
VOLUME ["/data", "/runs", "/var/cache/convkit"]
WORKDIR /runs
ENTRYPOINT ["convkit"]
CMD ["--help"]
