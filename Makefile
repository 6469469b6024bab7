# invrev: `make help` lists the targets. Every target sets up .venv first if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help setup test demo notebooks book check-book batch check-scorer gpu-wheels clean
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## create .venv with the pinned CPU torch and invrev (editable)

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

test: setup ## run the test suite (what CI runs)
	$(BIN)/python -m pytest

demo: setup ## the main job: learn one relation on the embedded world and draw a grid
	$(BIN)/invrev demo

notebooks: setup ## execute every notebook through papermill with tiny parameters into outputs/notebooks
	$(BIN)/invrev notebooks

book: setup ## build the Jupyter Book offline, warnings as errors (book/_build/html)
	$(BIN)/jupyter-book build . --config book/_config.yml --toc book/_toc.yml --path-output book -W -n --keep-going

check-book: setup ## read every page of the built book in headless Chromium (system package; installed when root); screenshots in outputs/book_check
	$(BIN)/python scripts/check_book.py --html book/_build/html --shots outputs/book_check

batch: setup ## the full batch (10 relations x 7 variants x 3 seeds), then the compact record for the book
	$(BIN)/invrev batch --experiments experiments/full.yaml --runs runs --workers 2 --joint 7
	$(BIN)/invrev collect --runs runs

check-scorer: setup ## validate the world's scorer on fresh renders
	$(BIN)/invrev world check-scorer --seed 7 --per-relation 200

gpu-wheels: ## wheels a lent GPU machine lacks (diffusers, papermill, a Jupyter kernel) into .whl/ (see scripts/gpu_run.sh)
	bash scripts/gpu_wheels.sh

clean: ## remove outputs and the book build (keeps runs/ and .venv)
	rm -rf outputs book/_build
