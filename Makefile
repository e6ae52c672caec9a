# Two commands set everything up: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
WORKER_QUEUES ?= default,training
WORKER_CONCURRENCY ?= 1

.PHONY: run test test-fast test-random install web worker inference beat migrate lint docs

$(PY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(VENV)/bin/pip install torch==2.13.0
	$(VENV)/bin/pip install -e '.[test]'
	touch $@

install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --noinput

# Embedded default: SQLite, local files and a bundled Redis owned by the launcher. It asks for
# DEBUG (tracebacks on error pages) and listens on 127.0.0.1 only; DEBUG=0 make run turns it off.
# exec: make's child is the launcher itself (no shell between), so make's SIGTERM reaches it, and it
# watches make for a SIGINT that make does not pass on; either way it stops every process it started.
run: migrate
	$(PY) manage.py build_base_model tiny-llama
	exec env DEBUG=$${DEBUG:-1} $(PY) manage.py launch --port $(PORT)

# uvicorn (finetune_site/server.py) streams request bodies; every interface, for a container or a proxy.
web:
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v 0
	$(PY) -m finetune_site.server --host 0.0.0.0 --port $(PORT)

worker:
	$(PY) -m celery -A finetune_site worker -l info -Q $(WORKER_QUEUES) -c $(WORKER_CONCURRENCY)

# Chat replies (playground, /v1/chat/completions): one process that keeps models loaded, apart
# from training so a long run never delays a reply.
inference:
	$(PY) -m celery -A finetune_site worker -l info -Q inference -c 1 -n inference@%h

beat:
	$(PY) -m celery -A finetune_site beat -l info -s $${DATA_DIR:-data}/celerybeat-schedule

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

# The quick loop while working: everything but the tests that start real workers, servers or a
# browser (marked e2e; see tests/conftest.py). `make test` (what CI runs) is the whole suite.
test-fast: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -m "not e2e"

# The whole suite in a shuffled order: no test may depend on another's leftovers. pytest-randomly
# prints its seed; `.venv/bin/pytest -p randomly --randomly-seed=N` repeats an order.
test-random: install
	$(VENV)/bin/pytest -p randomly

lint: install
	$(VENV)/bin/ruff check .

# The README's table of training options, generated from workers/hyperparameters.py.
docs: install
	$(PY) -c "import re, pathlib, workers.hyperparameters as h; p = pathlib.Path('README.md'); \
	p.write_text(re.sub(r'(<!-- hyperparameters:start -->\n).*?(<!-- hyperparameters:end -->)', \
	lambda m: m.group(1) + h.options_markdown() + m.group(2), p.read_text(), flags=re.S))"
