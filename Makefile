# The two commands a newcomer needs: `make up` and `make test`. Both install what is missing.
VENV := .venv
BIN := $(VENV)/bin
DATA ?= .pinhole

.PHONY: up test lock lint typecheck imports unit bench-store bench-cluster bench-lookups bench-media bench-feed bench-f4 bench-dm bench-social clean bootstrap

bootstrap:
	@scripts/bootstrap

## Start the local cluster on loopback with demo data (Ctrl-C stops it).
up: bootstrap
	$(BIN)/pinhole up --data $(DATA) --demo

## Lint, type-check, check the package layering and run the whole test suite (what CI runs).
test: bootstrap lint typecheck imports unit

## Refresh requirements.lock to the newest releases the ranges in pyproject.toml admit,
## install them and run the whole suite: an upgrade is a deliberate, tested commit.
lock: bootstrap
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		--generate-hashes --no-header --upgrade -q -o requirements.lock
	@scripts/bootstrap
	$(MAKE) lint typecheck imports unit

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

## The layering contracts of pyproject.toml's [tool.importlinter] (ARCHITECTURE.md).
imports:
	$(BIN)/lint-imports --no-cache

## The suite on two worker processes (a serial run keeps 0.9 of this machine's 2 cores busy:
## the rest is waiting on processes, disks and sockets), each test module whole on one
## worker (its module-scoped clusters start once); `make unit TEST_WORKERS=0` runs serially.
TEST_WORKERS ?= 2
## Then the store's, cluster and crash tests once more with the store's C read path off
## (PINHOLE_STORE_NATIVE=0, the pure-Python path every node falls back to); the [native]
## variants and the C-against-Python comparison ran in the first pass.
STORE_PYTHON_PASS := tests/store tests/e2e/test_cluster.py --ignore=tests/store/test_native.py -k "not native"
unit:
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile
	PINHOLE_STORE_NATIVE=0 $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(STORE_PYTHON_PASS)

## Full store benchmark (minutes); `pinhole bench store --quick` is the CI variant.
bench-store: bootstrap
	$(BIN)/pinhole bench store --json bench/results/store.json

## Full cluster benchmark; `pinhole bench cluster --quick` is the CI variant.
bench-cluster: bootstrap
	$(BIN)/pinhole bench cluster --json bench/results/cluster.json --plot bench/results/cluster.png

## Full lookup benchmark (unknown volume ids against real photos); `pinhole bench lookups --quick` is the CI variant.
bench-lookups: bootstrap
	$(BIN)/pinhole bench lookups --json bench/results/lookups.json --plot bench/results/lookups.png

## Full media benchmark; `pinhole bench media --quick` is the CI variant.
bench-media: bootstrap
	$(BIN)/pinhole bench media --json bench/results/media.json --plot bench/results/media.png

## Full feed benchmark (push, pull, hybrid; needs Redis); `pinhole bench feed --quick` is the CI variant.
bench-feed: bootstrap
	$(BIN)/pinhole bench feed --json bench/results/feed.json --plot bench/results/feed.png

## Full f4 benchmark (encode, reads healthy and degraded, bytes on disk, rebuild); `pinhole bench f4 --quick` is the CI variant.
bench-f4: bootstrap
	$(BIN)/pinhole bench f4 --json bench/results/f4.json --plot bench/results/f4.png

## Full DM delivery benchmark (Mosquitto, the API, Redis); `pinhole bench dm --quick` is the CI variant.
bench-dm: bootstrap
	$(BIN)/pinhole bench dm --json bench/results/dm.json

## Full social benchmark (DMs and notifications as bench-dm, the stories tray at 100,000 accounts, story views); `pinhole bench social --quick` is the CI variant.
bench-social: bootstrap
	$(BIN)/pinhole bench social --json bench/results/social.json

## Full search benchmark (typeahead over 100,000 users on SQLite and PostgreSQL); `pinhole bench search --quick` is the CI variant.
.PHONY: bench-search
bench-search: bootstrap
	$(BIN)/pinhole bench search --json bench/results/search.json

.PHONY: bench-explore
bench-explore: bootstrap
	$(BIN)/pinhole bench explore --json bench/results/explore.json

clean:
	rm -rf $(VENV) $(DATA) .mypy_cache .ruff_cache .pytest_cache .hypothesis

## The worked example of docs/operations/capacity.md: seed 000's load on the benchmark JSONs beside it.
.PHONY: plan-example
plan-example: bootstrap
	$(BIN)/pinhole plan $(addprefix --bench ,$(sort $(wildcard docs/operations/capacity/bench/*.json))) \
		--load docs/operations/capacity/seed-000.toml --plot docs/operations/capacity/seed-000.png
