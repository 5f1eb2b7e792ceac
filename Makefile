# The only entry points a newcomer needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PRESET ?= quick
# methods run at once by `make demo` (most run on one thread: 2 keeps both cores of a small machine busy)
JOBS ?= 2

.PHONY: install demo test test-all check bench lint doctest clean

# Idempotent: reinstalls only when pyproject.toml or constraints.txt changed.
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, from the pinned CPU build (a range would pull a CUDA build)
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,graph,rl,fl,text]'
	# torchattacks declares torchvision and requests~=2.25: installing them breaks torch and flwr
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps torchattacks==3.5.1
	touch $(STAMP)

demo: install
	$(BIN)/reprozoo run all --preset $(PRESET) --jobs $(JOBS)

# CI runs this (.ci/run): lint, the docstring examples, then the tests that are not marked slow.
test: lint doctest
	$(BIN)/python -m pytest -m "not slow"

test-all: install
	$(BIN)/python -m pytest

# Everything: lint, doctests and the whole test suite, slow tests included.
check: lint doctest test-all

doctest: install
	$(BIN)/python -m pytest --doctest-modules src

bench: install
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
