# Two commands do all the set-up: `make demo` and `make test`.
# Both create .venv if missing, install torch==2.13.0 FIRST (an unpinned torch would pull
# gigabytes of CUDA packages), then this package with its dev extras.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.bnnrobust-installed
SHARED_DATA := $(abspath ../shared/data)
# Use the workplace's copy of the datasets when BNNROBUST_DATA is not set and it exists.
BNNROBUST_DATA ?= $(if $(wildcard $(SHARED_DATA)/mnist),$(SHARED_DATA),)
export BNNROBUST_DATA

.PHONY: setup demo test test-slow lint bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,milp,ray,onnx]"
	$(BIN)/python -m pip install --quiet --no-deps "torchattacks==3.5.1" "onnx2torch==1.5.15"
	touch $@

setup: $(STAMP)

# A quick reproduction of one table of each paper (Galloway Table 1 at K = 64, Khalil's MILP
# solve times on 2x100, Panda Table 2 on MNIST), then the report: each quick table beside the
# paper-profile one committed in results/ (and the paper's numbers).
DEMO_SPECS ?= galloway2018/table1 khalil2019/solve_times panda2019/table2_mnist

demo: $(STAMP)
	$(BIN)/bnnrobust reproduce $(DEMO_SPECS) --profile quick --workers 2 --report report

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -s

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/attack_speed.py
	$(BIN)/python benchmarks/milp_speed.py --widths 100 --backends cpsat --points 20
