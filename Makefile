# Two commands do all the set-up on a fresh machine:  `make serve`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch; elsewhere add TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
# to avoid the multi-GB CUDA wheel, or TORCH_SPEC=torch for the CUDA build on a GPU machine.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: install serve test lint bench bench-install container-test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

# The optional fused DRConv operator (needs g++ and ninja; without them DRConv runs its PyTorch path).
# Rebuilt when its source changes; its stamp is written only by a successful build.
model/_ext/source.sha256: model/csrc/drconv_pointwise.cpp $(VENV)/.installed
	$(BIN)/python -m model.fused

install: $(VENV)/.installed model/_ext/source.sha256

serve: install
	$(BIN)/drface serve

test: install
	$(BIN)/python -m pytest

# The peer library of benchmarks/peer_compare.py (face_recognition on dlib), into the same venv; bench only.
bench-install: install
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/pip install --quiet --no-deps "face_recognition==1.3.0"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# The container smoke test (docs/deployment.md): builds the image, serves, trains, serves the trained artifact.
# Needs a Docker engine with compose v2 and the shared photos; minutes, so not part of `make test` or CI.
# Standard library only: runs without the venv.
container-test:
	$(PYTHON) scripts/container_smoke.py
