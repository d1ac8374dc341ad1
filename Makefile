# Two entry points a new user needs: `make demo` (no credentials) and `make test`; `make check` for day-to-day work.
PYTHON ?= python3
VENV   ?= .venv
LOADER_VENV ?= .venv-target-duckdb
BIN    := $(VENV)/bin

.PHONY: demo demo-postgres test mutations mutations-generated install bench lint lock readme-settings release-check clean

# The development tools are PEP 735 dependency groups (pyproject.toml), which pip installs from 25.1 on.
$(BIN)/tap-jobresults: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade 'pip>=25.1'
	$(BIN)/pip install --quiet -c constraints.txt -e . --group dev
	touch $@

install: $(BIN)/tap-jobresults

# The demo's loader lives in its own virtualenv, as Meltano would install it.
$(LOADER_VENV)/bin/target-duckdb:
	$(PYTHON) -m venv $(LOADER_VENV)
	# duckdb 2 sniffs a header in the loader's headerless CSV and drops each batch's first row.
	$(LOADER_VENV)/bin/pip install --quiet 'target-duckdb==0.8.0' 'duckdb==1.1.3'

# dbt for the review models in transform/, in its own virtualenv too. dbt-core 1.12 needs a wheel from GitHub
# (not PyPI), so 1.11; duckdb is the loader's version, so that both read and write the same file format.
DBT_VENV ?= .venv-dbt
$(DBT_VENV)/bin/dbt:
	$(PYTHON) -m venv $(DBT_VENV)
	$(DBT_VENV)/bin/pip install --quiet 'dbt-core==1.11.16' 'dbt-postgres==1.11.0' 'dbt-duckdb==1.11.1' 'duckdb==1.1.3'

# V=1 shows the tap's and the loader's logs (the demo shows warnings only).
V ?=
DEMO_ARGS = $(if $(V),--verbose)
demo: install $(LOADER_VENV)/bin/target-duckdb $(DBT_VENV)/bin/dbt
	PATH="$(CURDIR)/$(BIN):$(CURDIR)/$(LOADER_VENV)/bin:$$PATH" $(BIN)/python scripts/demo.py $(DEMO_ARGS)

.venv-target-postgres/bin/target-postgres:
	$(PYTHON) -m venv .venv-target-postgres
	.venv-target-postgres/bin/pip install --quiet 'meltanolabs-target-postgres==0.8.1'

# The same demo into PostgreSQL (PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE; default 127.0.0.1:5432).
demo-postgres: install .venv-target-postgres/bin/target-postgres $(DBT_VENV)/bin/dbt
	PATH="$(CURDIR)/$(BIN):$(CURDIR)/.venv-target-postgres/bin:$$PATH" $(BIN)/python scripts/demo.py --loader postgres $(DEMO_ARGS)

# Loaders and Meltano for the end-to-end tests, each in its own virtualenv (as Meltano does).
# The `postgres` extra brings psycopg 3, for a system database in PostgreSQL
# (MELTANO_DATABASE_URI=postgresql+psycopg://...), which parallel shards need.
.venv-meltano/bin/meltano: .venv-meltano/.meltano-4.4.1-postgres
.venv-meltano/.meltano-4.4.1-postgres:
	$(PYTHON) -m venv .venv-meltano
	.venv-meltano/bin/pip install --quiet 'meltano[postgres]==4.4.1'
	touch $@

# The orchestrator example (orchestrate/dagster): Dagster and elt-dagster-meltano, nothing else (~35 s, ~160 MB).
.venv-dagster/bin/dagster:
	$(PYTHON) -m venv .venv-dagster
	.venv-dagster/bin/pip install --quiet 'dagster==1.13.28' 'elt-dagster-meltano==1.0.1'

# target-snowflake, and in the same virtualenv the Snowflake emulator its load test runs (fakesnow's server, with
# the adapter in tests/snowflake_emulator.py). fakesnow 0.12.1 needs Python 3.11+ and imports only with
# snowflake-connector-python 4.x (5.x breaks it); the rest is what that resolves to, pinned.
SNOWFLAKE_PINS := .venv-target-snowflake/.target-0.19.2-fakesnow-0.12.1
.venv-target-snowflake/bin/target-snowflake: $(SNOWFLAKE_PINS)
$(SNOWFLAKE_PINS):
	$(PYTHON) -m venv .venv-target-snowflake
	.venv-target-snowflake/bin/pip install --quiet 'meltanolabs-target-snowflake==0.19.2' \
	  'snowflake-connector-python==4.8.0' 'snowflake-sqlalchemy==1.11.0' 'SQLAlchemy==2.0.58' \
	  'fakesnow[server]==0.12.1' 'duckdb==2.0.1' 'sqlglot==30.22.0' 'starlette==1.10.0' 'uvicorn==0.55.0'
	touch $@

# The whole suite (docs/development.md): PostgreSQL on 127.0.0.1:5432 (or TAP_JOBRESULTS_TEST_PG), the loaders,
# Meltano, dbt and Dagster in virtualenvs of their own. Nothing lands in the project outside ignored folders:
# Meltano's plugins go to $(TEST_CACHE) (MELTANO_SYS_DIR_ROOT), not to the project's .meltano/.
TEST_CACHE ?= $(HOME)/.cache/tap-jobresults-tests
# Test processes at once. Most tests wait on subprocesses and fake servers' latency, so 4 on 2 cores finish the
# suite about 30 % sooner than 2 (the fast suite: 5 min 20 s against 7 min 25 s, measured on this 2-core machine).
WORKERS ?= 4
test: install $(LOADER_VENV)/bin/target-duckdb .venv-target-postgres/bin/target-postgres .venv-meltano/bin/meltano .venv-target-snowflake/bin/target-snowflake .venv-dagster/bin/dagster $(DBT_VENV)/bin/dbt
	JOBRESULTS_TEST_CACHE="$(TEST_CACHE)" PATH="$(CURDIR)/.venv-meltano/bin:$$PATH" $(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --durations=25

# (Targets of docs/development.md.)
.PHONY: check docs fake-api clean-docs

# The fast suite for day-to-day work: no loaders, no Meltano, no PostgreSQL (`slow` tests left out; see
# docs/development.md for what that excludes). About 5 minutes on a quiet 2-core machine.
check: install
	$(BIN)/python -m pytest -m "not slow" -n $(WORKERS) -q

# The docs site (README as home page + docs/), --strict: a broken link or anchor fails the build.
DOCS_VENV ?= .venv-docs
$(DOCS_VENV)/bin/mkdocs: docs/requirements.txt
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/pip install --quiet -r docs/requirements.txt
	touch $@

docs: $(DOCS_VENV)/bin/mkdocs
	$(DOCS_VENV)/bin/mkdocs build --strict --site-dir output/site

clean: clean-docs
clean-docs:
	rm -rf $(DOCS_VENV)

# The fake APIs on fixed ports, with the demo's jobs, until Ctrl-C: try every recipe of the docs without
# credentials. Writes the settings for them to output/fake-api/ (config.json, tap.env, meltano.env).
FAKE_API_PORT ?= 8781
fake-api: install
	$(BIN)/python -m tests.fakeapi serve --scenario demo --port $(FAKE_API_PORT) --out-dir output/fake-api

# One-line behavioural mutations of tap_jobresults/, each in a scratch copy: the tests chosen for it
# must fail (scripts/mutations.py; .ci/run runs it after the suite, with MUTATION_ARGS=--no-baseline since
# the suite has just passed).
MUTATION_ARGS ?=
mutations: install
	$(BIN)/python scripts/mutations.py $(MUTATION_ARGS)

# Generated mutations (scripts/mutations_generated.py): one-line AST mutants of the core modules, a sample
# per run (seeded by the ISO week and the commit, every module each run), each run against the fast tests
# that execute its line; fails when more than 10% survive. `MUTATION_GENERATED_ARGS=--all` runs every mutant.
MUTATION_GENERATED_ARGS ?=
mutations-generated: install
	$(BIN)/python scripts/mutations_generated.py $(MUTATION_GENERATED_ARGS)

bench: install
	$(BIN)/python -m benchmarks

# ruff and mypy are pinned in the `lint` dependency group and constraints.txt; .ci/run runs this too.
lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy tap_jobresults

# Re-pin after changing dependencies: the constraints are what a fresh install resolves to
# (on .venv's Python; the Python 3.10 section of constraints.txt is kept, see scripts/lock.py).
lock:
	$(BIN)/python scripts/lock.py

# After adding or changing a setting: the README table is the `--about --format=markdown` output
# (tests/test_plugin_definition.py checks it, and that meltano.yml declares the same settings).
readme-settings: install
	$(BIN)/python scripts/readme_settings.py

# What the release workflow (.github/workflows/release.yml) builds and inspects, locally: wheel and sdist
# from a clean clone of HEAD (tracked files only), `twine check`, and their contents (scripts/release_check.py:
# the package, its schemas and py.typed in; no tests, no dbt or Meltano project files). .ci/run runs it.
.venv-release/bin/twine:
	$(PYTHON) -m venv .venv-release
	.venv-release/bin/pip install --quiet --upgrade 'pip>=25.1'
	.venv-release/bin/pip install --quiet --group release

release-check: .venv-release/bin/twine
	.venv-release/bin/python scripts/release_check.py

clean:
	rm -rf $(VENV) .venv-release $(LOADER_VENV) .venv-target-postgres .venv-meltano .venv-target-snowflake .venv-dagster .venv-py3.* $(DBT_VENV) .meltano output .pytest_cache transform/target transform/logs
