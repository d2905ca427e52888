# Quick start: `make run` (the whole stack with a simulated city), `make test-fast` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat constraints.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test test-fast test-kafka bench soak stress-scale-in install clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "citybrain needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,bench]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: $(STAMP)
	CITYBRAIN_CASE_ACCEPT_S=$${CITYBRAIN_CASE_ACCEPT_S:-120} CITYBRAIN_CASE_HANDLE_S=$${CITYBRAIN_CASE_HANDLE_S:-600} \
	  $(BIN)/citybrain up --simulate 1000 --handle

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The broker-free tier: no broker, no process started, property tests drawing a tenth of
# their examples (tests/conftest.py marks the rest `broker`). Under a minute.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not broker" --hypothesis-profile=fast $(PYTEST_ARGS)

# The scale-in scenario (one of two workers leaves) 20 times in a row; RUNS=n for more.
stress-scale-in: $(STAMP)
	STRESS_SCALE_IN_RUNS=$(or $(RUNS),20) $(BIN)/python -m pytest tests/test_scale_in_stress.py $(PYTEST_ARGS)

# The tier on Apache Kafka: tests/kafka on a 3-broker KRaft cluster (Java 17+; Maven
# fetches Kafka's jars on the first run, cached under ~/.cache/citybrain).
test-kafka: $(STAMP)
	$(BIN)/python -m pytest tests/kafka --kafka $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# 30 minutes of the whole stack under load; SOAK_ARGS="--minutes 5" for less.
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
