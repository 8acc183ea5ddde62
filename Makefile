# Two commands do all set-up: `make demo` and `make test` create .venv and install requirements.txt when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNS ?= runs/demo
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_EVALUATE_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo demo-all test app bench chromium clean-demo

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

demo: $(VENV)/.installed
	$(PY) demo.py --runs $(RUNS)

demo-all: $(VENV)/.installed
	$(PY) demo.py --runs $(RUNS) --all

test: $(VENV)/.installed chromium
	$(PY) -m pytest -q

app: $(VENV)/.installed
	$(PY) -m streamlit run app/main.py --server.headless true -- --runs-dir $(RUNS)

# Debian's package, for the browser test; Playwright's own browser download is not used.
chromium:
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

bench: $(VENV)/.installed chromium
	$(PY) benchmarks/objective_overhead.py
	$(PY) benchmarks/logging_overhead.py
	$(PY) benchmarks/sweep_throughput.py
	$(PY) benchmarks/reward_throughput.py
	$(PY) benchmarks/app_latency.py

clean-demo:
	rm -rf $(RUNS)
