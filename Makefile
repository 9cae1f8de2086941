# ipmix: the two commands a newcomer runs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch; on a GPU machine install your own CUDA torch into the venv first
# and this step leaves it alone. The demo table in README.md was recorded with this torch.
TORCH_SPEC ?= torch==2.13.0
# The versions the recorded hashes (tests/test_golden_outputs.py) and the demo table came from.
CONSTRAINTS ?= constraints.txt
DEMO_OUT ?= demo-out
BENCH_OUT ?= bench-out
PEERS_VENV ?= .venv-peers

.PHONY: install demo test test-fast bench bench-peers clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[train,demo,eval,test]"
	touch $@

demo: install
	$(VENV)/bin/ipmix demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q tests

# The pure-Python tests only: no Numba kernel is compiled (tests/conftest.py enforces it).
test-fast: install
	$(PY) -m pytest -q -m "not kernels" tests

bench: install
	mkdir -p $(BENCH_OUT)
	$(VENV)/bin/ipmix bench fractals --json | tee $(BENCH_OUT)/fractals.json
	$(VENV)/bin/ipmix bench augment --json | tee $(BENCH_OUT)/augment.json
	$(VENV)/bin/ipmix bench build --json | tee $(BENCH_OUT)/build.json
	$(VENV)/bin/ipmix bench stream --json | tee $(BENCH_OUT)/stream.json
	$(VENV)/bin/ipmix bench corrupt --json | tee $(BENCH_OUT)/corrupt.json

# ipmix's writer and reader beside LitData, MosaicML Streaming and WebDataset, in their own
# venv; torch is held to the CPU build as a constraint (their installs would pull a CUDA one).
bench-peers: install
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q -c bench/peers/constraints.txt "$(TORCH_SPEC)" -r bench/peers/requirements.txt
	mkdir -p $(BENCH_OUT)
	$(PEERS_VENV)/bin/python bench/peers/peers.py --ipmix-python $(PY) --json $(BENCH_OUT)/peers.json

clean:
	rm -rf $(DEMO_OUT) $(BENCH_OUT) .pytest_cache
