# Two commands do all set-up: `make demo` and `make test` create .venv and install requirements.txt when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNS ?= runs/demo
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_EVALUATE_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo demo-all test app bench bench-scale bench-recipes chromium clean-demo base data findings findings-quick \
	findings-small findings-beams-text findings-lam-text

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq torch==2.13.0
	$(PY) -m pip install -qq -r requirements.txt
	touch $@

DEMO_CHAINS ?= summarize,findings
demo: $(VENV)/.installed
	$(PY) demo.py --runs $(RUNS) --chains $(DEMO_CHAINS)

demo-all: $(VENV)/.installed
	$(PY) demo.py --runs $(RUNS) --chains summarize,translate,summarize-scratch,math-all

# The paper's findings at CPU size (configs/findings/full.yaml) and a 15-minute version; each prints the report's
# path last. Rerunning keeps finished runs and resumes interrupted ones.
findings: $(VENV)/.installed
	$(PY) -m findings run --config configs/findings/full.yaml

findings-quick: $(VENV)/.installed
	$(PY) -m findings run --config configs/findings/quick.yaml

# Grids whose premises can hold on this CPU, each stated in its file before the runs: small-data overfitting
# (findings 4 and 5, about 50 minutes), beam search on real text (finding 3) and lam on real text (6 and 7).
findings-small: $(VENV)/.installed
	$(PY) -m findings run --config configs/findings/small_data.yaml

findings-beams-text: $(VENV)/.installed
	$(PY) -m findings run --config configs/findings/beams_text.yaml

findings-lam-text: $(VENV)/.installed
	$(PY) -m findings run --config configs/findings/lam_text.yaml

test: $(VENV)/.installed chromium
	$(PY) -m pytest -q

app: $(VENV)/.installed
	$(PY) -m streamlit run app/main.py --server.headless true -- --runs-dir $(RUNS)

# Debian's package, for the browser test; Playwright's own browser download is not used.
chromium:
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

bench: $(VENV)/.installed chromium
	$(PY) benchmarks/objective_overhead.py
	$(PY) benchmarks/head_routes.py
	$(PY) benchmarks/logging_overhead.py
	$(PY) benchmarks/sweep_throughput.py
	$(PY) benchmarks/reward_throughput.py
	$(PY) benchmarks/app_latency.py

# Cost at scale (benchmarks/scale.py): the ladder of sizes up to the 0.5B shape through training, decoding and
# rewards, measured beside irl/memory.py's prediction, into benchmarks/results/scale.jsonl and scale.png; resumes.
bench-scale: $(VENV)/.installed
	$(PY) benchmarks/scale.py

# Each recipe of configs/paper/ at its real shape (benchmarks/paper_recipes.py): predicted peak memory, and for each
# that fits 24 GiB two real optimizer steps on local data of its columns, measured, into
# benchmarks/results/paper_recipes.jsonl; a recipe that does not fit gets the reason. Resumes.
# the recipes that sample take their two steps without the profiler: its events outgrow 24 GB beside them
bench-recipes: $(VENV)/.installed
	$(PY) benchmarks/paper_recipes.py --unprofiled gsm8k_online_iqlearn,gsm8k_gail

clean-demo:
	rm -rf $(RUNS)

# The shipped base model, rebuilt from scratch: the corpus (Debian packages, cached in .cache/debian), then
# pretraining per configs/base.yaml into $(BASE_BUILD)/run, then its last checkpoint with the recipe (config,
# metrics, corpus manifest, SHA256SUMS) into models/base. About an hour on a 2-core CPU; another machine
# (or torch build) may differ in the last bits of the weights: recipe/manifest.json records what was shipped.
BASE_BUILD ?= build/base
base: $(VENV)/.installed
	rm -rf $(BASE_BUILD)
	$(PY) -m tasks corpus --out $(BASE_BUILD)/corpus
	$(PY) -m irl pretrain --config configs/base.yaml --data $(BASE_BUILD)/corpus --output_dir $(BASE_BUILD)/run
	$(PY) -m irl export --run $(BASE_BUILD)/run --out models/base

# The real-text tasks rebuilt from the pinned Debian packages (cached in .cache/debian): data/summarize/ and
# data/translate/ with their cards, whose trivial baselines' scores analysis writes in.
data: $(VENV)/.installed
	$(PY) -m tasks text --out data
	$(PY) -m analysis.baselines --task summarize --card data/summarize/README.md
	$(PY) -m analysis.baselines --task translate --card data/translate/README.md
