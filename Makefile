# facematch: `make demo` runs the whole pipeline on the embedded sample; `make test` runs the tests.
# Both create .venv and install requirements.txt first when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEMO   := --config config/demo.yaml
PORT   ?= 3001

.PHONY: demo test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-nodeps.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@touch $@

test: venv
	$(PY) -m pytest -q tests

demo: venv
	@echo "== 1/5 split: a competition from data/sample (identity-disjoint, opaque names)"
	$(PY) split.py --people data/sample/people --distractors data/sample/distractors --out data/competition --force $(DEMO)
	@echo "== 2/5 crop: face crops of every photo (config/demo.yaml's detector), cached in data/cache/crops"
	$(PY) faces.py data/competition $(DEMO)
	@echo "== 3/5 train: the config/demo.yaml network from random weights, on the CPU"
	$(PY) train.py $(DEMO)
	@echo "== 4/5 evaluate: the test people (never seen in training), with the ground truth"
	$(PY) evaluate.py --checkpoint checkpoints/demo/best.pt --competition data/competition $(DEMO)
	@echo "== 5/5 rank and submit: top-10 gallery names per query, to a local competition server on port $(PORT)"
	@mkdir -p outputs; rm -f outputs/demo_server.db*; \
	$(PY) server.py --competition data/competition --port $(PORT) --db outputs/demo_server.db > outputs/demo_server.log 2>&1 & \
	pid=$$!; trap 'kill $$pid 2>/dev/null' EXIT; \
	for i in $$(seq 100); do grep -q "server on" outputs/demo_server.log 2>/dev/null && break; \
	  kill -0 $$pid 2>/dev/null || { cat outputs/demo_server.log; exit 1; }; sleep 0.1; done; \
	$(PY) request_send.py --checkpoint checkpoints/demo/best.pt --test data/competition/test \
	  --out outputs/submission.json $(DEMO) submit.url=http://127.0.0.1:$(PORT)/results/ submit.groupname=demo
	@echo "== done: leaderboard in outputs/demo_server.db; see it with: $(PY) server.py --competition data/competition --db outputs/demo_server.db"

clean:
	rm -rf data/competition data/cache checkpoints/demo outputs/submission.json outputs/demo_server.*
