# modgap — set-up and everyday targets. `make test` and `make demo` work on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EXTRAS ?= encoders,dev

.PHONY: install system-deps test demo lint format bench docs docs-bench clean

# Debian packages the demo and the browser test use: Fashion-MNIST images and headless Chromium.
# Installed when apt-get is available and we are root; otherwise say what is missing and go on
# (the tests that need them skip with a reason).
SYSTEM_PKGS := dataset-fashion-mnist chromium
system-deps:
	@missing=""; \
	[ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian packages:$$missing"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } || echo "warning: could not install$$missing; the tests that need them will skip"; \
	else \
		echo "note: Debian packages missing:$$missing (install them with: sudo apt-get install$$missing)"; \
	fi

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned: 2.13.0 is the CPU build (a plain `torch` would pull a multi-GB CUDA one)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	# open_clip's adapter test: the package without its dependencies (they would pull
	# torchvision); the test imports it against a stand-in torchvision
	$(PY) -m pip install -q --no-deps "open_clip_torch==3.3.0"
	touch $(STAMP)

install: $(STAMP)

# The tests of committed figures (docs data, ties, the COCO-500 reference values) run a second
# time under other kernels than the machine's own and one thread: OpenBLAS's Prescott core
# (numpy, scipy), MKL's SSE2 path (torch: MKL_CBWR=COMPATIBLE; MKL_ENABLE_INSTRUCTIONS acts on
# Intel CPUs only), ATen's unvectorised kernels. A result that moves with the kernel fails here.
OTHER_KERNELS := MODGAP_OTHER_KERNELS=1 OPENBLAS_CORETYPE=Prescott MKL_CBWR=COMPATIBLE \
	MKL_ENABLE_INSTRUCTIONS=SSE4_2 ATEN_CPU_CAPABILITY=default \
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
FIGURE_TESTS := tests/test_docs.py tests/test_ties.py \
	tests/test_measures.py::test_centroid_gap_coco500 \
	tests/test_cli_measure.py::test_measure_coco500 \
	tests/test_reducers_coco.py::test_raw_reference_values \
	tests/test_hubness.py::test_coco500_clip_has_hubs

test: install system-deps
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q
	env $(OTHER_KERNELS) $(PY) -m pytest -q $(FIGURE_TESTS)

demo: install system-deps
	$(PY) -m modgap demo

lint: install
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

format: install
	$(VENV)/bin/ruff format src tests benchmarks scripts
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts

bench: install
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

# Results tables of the docs: recompute docs/data/*.json on the shared COCO-500 files (about a
# minute) and re-render every <!-- table:ID --> block; docs-bench reruns the timing benchmarks
# (about an hour on 2 cores) into docs/data and renders their tables.
docs: install
	$(PY) scripts/docs_tables.py produce --group coco500

docs-bench: install
	nice -n 5 $(PY) scripts/docs_tables.py produce --group benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
