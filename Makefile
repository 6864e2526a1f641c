# resadapt-eval: `make test` and `make demo` each install what they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-acceptance test-lmms gpu-check check-baseline check baseline-results reference-results \
	resadapt-findings demo demo-findings frontier bundled-model reference-model bundled-encoder bundled-allocator reference-allocator clean

install: $(STAMP)

# Exact pins: torch 2.14.1 + torchvision 0.29.1 run on the CPU here and on GPUs elsewhere;
# an unpinned torchvision would pull a mismatched torch.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# pytest exits 5 when it collects no tests: that is a failure too.
test: install
	$(BIN)/lint-imports
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# A researcher's day on CPU (tests/test_acceptance.py): the built wheel in a fresh venv, stand-in
# checkpoints by path, train-allocator, the README's sweep, frontier and check (several minutes).
test-acceptance: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -s -m acceptance tests/test_acceptance.py

# The lmms-eval plugin, in its own environment (lmms-eval pulls about 190 packages from the index):
# lmms-eval's evaluator runs `--model resadapt` on a local copy of its videomme task. Every version
# is pinned by constraints/lmms.txt (versions known to work), so a new release of a dependency of a
# dependency cannot break it silently.
LMMS_VENV := .venv-lmms
LMMS_CONSTRAINTS := constraints/lmms.txt
$(LMMS_VENV)/.installed: setup.cfg pyproject.toml $(LMMS_CONSTRAINTS)
	$(PYTHON) -m venv $(LMMS_VENV)
	$(LMMS_VENV)/bin/pip install -q -U pip
	$(LMMS_VENV)/bin/pip install -q -c $(LMMS_CONSTRAINTS) torch==2.14.1 torchvision==0.29.1
	$(LMMS_VENV)/bin/pip install -q -c $(LMMS_CONSTRAINTS) -e '.[lmms,dev]'
	touch $@

test-lmms: $(LMMS_VENV)/.installed
	HF_HUB_OFFLINE=1 $(LMMS_VENV)/bin/python -m pytest -q -s -m lmms tests/test_lmms_plugin.py

# The GPU check (issue 24; docs/gpu-bench.md): on a machine with one GPU, its own torch and transformers
# and no network, under 10 minutes; writes docs/gpu-bench-<gpu>-<date>.json.
gpu-check:
	bash scripts/gpu_check.sh

# The regression gate: rerun every configuration committed under results/baseline (fresh, into
# results/check) and check each against it; exit 1 if accuracy drops or tokens rise.
# `make check` is its short name.
check-baseline: install
	rm -rf results/check
	HF_HUB_OFFLINE=1 $(BIN)/resadapt-eval check-baseline results/baseline --out results/check

check: check-baseline

# Regenerate the committed baseline runs (after retraining the bundled model or allocator, on purpose
# only): uniform-scale on the four probes, and the bundled allocator on the two it was trained for.
# `reference-results` is its former name.
BASELINE_TASKS := probe-videoqa,probe-longvideo,probe-grounding,probe-math,probe-which
baseline-results: install
	rm -rf results/baseline
	HF_HUB_OFFLINE=1 $(BIN)/resadapt-eval sweep --tasks $(BASELINE_TASKS) --strategies uniform-scale \
		--budgets 0.25,1.0 --out results/baseline --no-progress
	HF_HUB_OFFLINE=1 $(BIN)/resadapt-eval sweep --tasks probe-videoqa,probe-longvideo --strategies resadapt-budget \
		--budgets 0.25,1.0 --out results/baseline --no-progress
	HF_HUB_OFFLINE=1 $(BIN)/resadapt-eval sweep --tasks $(RESADAPT_TASKS) --strategies resadapt \
		--budgets 0.25,1.0 --out results/baseline --no-progress

reference-results: baseline-results

# The bundled resadapt-budget allocator's recipe: probe-videoqa at 0.25 keeping the best chunk, probe-longvideo at
# 0.25 keeping the best 8 of 32 chunks (at full resolution: 0.25 is the 2x2 floor of every chunk, so
# a planner can only move resolution there by dropping), thumbnails at half the vanilla side.
ALLOCATOR_RECIPE := --task probe-videoqa --task probe-longvideo --budgets 0.25 \
	--task-drop probe-videoqa=topk:1 --task-drop probe-longvideo=topk:8 --thumb-scale 0.5 --steps 2000

# The bundled resadapt allocator on the probes' test splits, against uniform-scale, written to a dated
# docs/findings/<date>-resadapt.md (about 20 minutes on 2 CPU cores).
resadapt-findings: install
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/resadapt_findings.py

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/resadapt-eval demo

# After `make demo`: the dated docs/findings/<date>-demo.md (every strategy at 0.1 and 0.25 with its
# tokens and FLOPs, the headline comparisons paired on the same samples, the frontier figure); adds the
# 36-token probe-videoqa runs the comparisons need (a few minutes).
demo-findings: install
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/demo_findings.py

# The Pareto frontier of everything under results/: figures and tables in results/frontier/, and the
# browsable report (frontier, every run's records, each sample's plans) in results/view/index.html.
frontier: install
	$(BIN)/resadapt-eval frontier results
	HF_HUB_OFFLINE=1 $(BIN)/resadapt-eval view results --out results/view

# Retrain the bundled backbone (tiny-bundled) from scratch (deterministic recipe; about an hour on 2 CPU
# cores). `reference-model` is its former name.
bundled-model: install
	HF_HUB_OFFLINE=1 $(BIN)/python -u -m resadapt_eval.training.bundled_model --out resadapt_eval/assets/tiny-bundled

reference-model: bundled-model

# Retrain the resadapt allocator's own encoder (tiny-encoder: tiny-bundled's vision tower pretrained further,
# language model unchanged; deterministic, about 2 minutes). After `bundled-model`, run it again.
bundled-encoder: install
	HF_HUB_OFFLINE=1 $(BIN)/python -u -m resadapt_eval.training.bundled_encoder --out resadapt_eval/assets/tiny-encoder

# The bundled `resadapt` allocator's recipe (the published method): CAPO in free mode, rollouts answered by
# tiny-bundled, its own encoder tiny-encoder, in two stages (a curriculum).
# Stage 1, both probes, 800 prompts: where things are. At this scale (not the paper's ~64,000 prompts) it
# learns only with the original's own knobs set so: 4 prompts per update, a start at mean scale 0.6 (not the
# uniform Beta, whose softplus tail gives no gradient), no clamp on right answers (`noclamp`), c0 = 0.24, no
# concentration loss; lambda_gas = 2, 0.5 on probe-longvideo; and the head's two additions (--standardize
# --token-relevance). It finds probe-longvideo's evidence chunk and probe-which's two tiles, not which tile
# the question names.
# Stage 2, from stage 1, probe-which only (probe-longvideo at weight 0: no prompts, but its cost level is
# recorded for the budget steer), 1,500 prompts from 1,000 distinct training videos, 4 answers per
# allocation: which tile the question names. Fewer distinct videos, 2 answers, or both probes mixed in one
# stage learn the question's tile or the long video's chunk, not both (docs/strategies.md, on dev data).
RESADAPT_TASKS := probe-longvideo,probe-which
RESADAPT_STAGE1 := --task probe-longvideo --task probe-which --steps 800 --train-samples 200 --batch-prompts 4 \
	--init-logit -4 --init-scale 0.6 --pivot-center 0.24 --no-clamp --concentration-weight 0 --standardize \
	--token-relevance --cost-penalty 2 --task-cost-penalty probe-longvideo=0.5
RESADAPT_RECIPE := --task probe-longvideo --task probe-which --task-weight probe-longvideo=0 --steps 1500 \
	--train-samples 1000 --batch-prompts 4 --answers 4 --pivot-center 0.24 --no-clamp --concentration-weight 0 \
	--standardize --token-relevance --cost-penalty 2 --init-from .cache/resadapt-stage1

# Retrain both bundled allocators with CAPO: resadapt-budget's for tiny-bundled, and resadapt's (which
# plans for any backbone). Each prints its time; docs/findings/*-allocator-reproduction.md has the
# measured total. One thread each: a reinforcement-learning run's trajectory follows the last bits of
# its floating-point sums, which another thread count may change; on one thread a rerun is bit-identical.
# `reference-allocator` is its former name.
bundled-allocator: install
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/resadapt-eval train-allocator \
		--out resadapt_eval/assets/allocator/tiny-bundled $(ALLOCATOR_RECIPE) --no-progress
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/resadapt-eval train-resadapt \
		--out .cache/resadapt-stage1 $(RESADAPT_STAGE1) --no-progress
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/resadapt-eval train-resadapt \
		--out resadapt_eval/assets/allocator/resadapt $(RESADAPT_RECIPE) --no-progress

reference-allocator: bundled-allocator

clean:
	rm -rf .cache results/demo
