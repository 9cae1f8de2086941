# ipmix: the two commands a newcomer runs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch; on a GPU machine install your own CUDA torch into the venv first
# and this step leaves it alone.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= demo-out
BENCH_OUT ?= bench-out

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[train,test]"
	touch $@

demo: install
	$(VENV)/bin/ipmix demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q tests

bench: install
	mkdir -p $(BENCH_OUT)
	$(VENV)/bin/ipmix bench fractals --json | tee $(BENCH_OUT)/fractals.json
	$(VENV)/bin/ipmix bench augment --json | tee $(BENCH_OUT)/augment.json
	$(VENV)/bin/ipmix bench build --json | tee $(BENCH_OUT)/build.json
	$(VENV)/bin/ipmix bench stream --json | tee $(BENCH_OUT)/stream.json

clean:
	rm -rf $(DEMO_OUT) $(BENCH_OUT) .pytest_cache
