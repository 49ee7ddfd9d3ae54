# Stint build targets. `make run` tries Stint locally; `make test` is what CI runs.

GO        ?= go
BIN       := $(CURDIR)/bin
PG_DSN    ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
# DEV_VAULT is the Vault server for development and tests: a `vault` on the PATH
# at a supported version (1.21 or a later 1.x) if there is one, else bin/vault,
# built from cmd/devvault. `make DEV_VAULT=$(CURDIR)/bin/vault …` forces the build.
ifeq ($(origin DEV_VAULT),undefined)
DEV_VAULT := $(shell cmd/devvault/find-vault.sh $(BIN)/vault)
endif
TEST_ENV  := STINT_TEST_VAULT_BIN=$(DEV_VAULT) STINT_TEST_PG_DSN='$(PG_DSN)' STINT_TEST_ARTIFACTS=$(CURDIR)/test-artifacts

.PHONY: all build devvault run test chaos bench fuzz fuzz-smoke vet fmt clean distclean

all: build

## build: compile the stint binary to bin/stint
build:
	$(GO) build -o $(BIN)/stint ./cmd/stint

## devvault: build the development Vault server (cmd/devvault: Vault v1.21.0's core with KV, database/PostgreSQL and PKI) to bin/vault, unless a supported vault is on the PATH
devvault: $(DEV_VAULT)
ifneq ($(DEV_VAULT),$(BIN)/vault)
	@echo "using $(DEV_VAULT) ($$($(DEV_VAULT) version | head -n 1)) as the development Vault"
endif

$(BIN)/vault: $(wildcard cmd/devvault/*.go) cmd/devvault/go.mod cmd/devvault/go.sum cmd/devvault/build.sh
	@GO='$(GO)' cmd/devvault/build.sh $@

## run: build everything, start the development Vault and Stint on SQLite, print how to request a lease
run: build devvault
	$(BIN)/stint dev --vault-bin $(DEV_VAULT) --pg-dsn '$(PG_DSN)'

## test: run every test against the development Vault and the local PostgreSQL (fuzz seed corpora included), then fuzz-smoke
test: devvault
	$(TEST_ENV) $(GO) test -count=1 -timeout 30m ./...
	@$(MAKE) --no-print-directory fuzz-smoke

# The fuzz targets, as package:Name. Their seed corpora (testdata/fuzz/Name in
# each package, plus the f.Add seeds) run as ordinary tests in `make test`.
FUZZ_TARGETS := ./web:FuzzDecodeJSON ./approvals/slack:FuzzInteraction ./broker/identity:FuzzToken ./approvals/policy:FuzzPolicyRequest
FUZZTIME  ?= 10m
SMOKETIME ?= 5s

## fuzz: run each fuzz target for FUZZTIME (default 10m each; e.g. make fuzz FUZZTIME=2m); a crasher is written to the package's testdata/fuzz and stops the run
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test $$pkg -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME); \
	done

## fuzz-smoke: run each fuzz target for SMOKETIME (default 5s), as make test does
fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(SMOKETIME)

# The fault-injection suite (cmd/stint/chaos_test.go). make test runs it
# with CHAOS_FAULTS=20 and Vault outages of seconds; make chaos runs the
# full version. Override any of these: make chaos CHAOS_SEED=7 CHAOS_RUNS=3.
CHAOS_RUNS       ?= 1
CHAOS_FAULTS     ?= 200
CHAOS_VAULT_DOWN ?= 60s
CHAOS_SEED       ?=
CHAOS_LOG        := $(CURDIR)/test-artifacts/chaos.log

## chaos: the fault-injection suite in full: 3 replicas on a PostgreSQL cluster of its own, CHAOS_FAULTS (200) faults; prints the chaos: summary line last
chaos: build devvault
	@mkdir -p $(dir $(CHAOS_LOG))
	@status=0; CHAOS_RUNS=$(CHAOS_RUNS) CHAOS_FAULTS=$(CHAOS_FAULTS) CHAOS_VAULT_DOWN=$(CHAOS_VAULT_DOWN) CHAOS_SEED=$(CHAOS_SEED) \
		CHAOS_STINT_BIN=$(BIN)/stint $(TEST_ENV) $(GO) test -run '^TestChaos$$' -count=1 -v -timeout 12h ./cmd/stint \
		> $(CHAOS_LOG) 2>&1 || status=$$?; \
	grep -v '^chaos: ' $(CHAOS_LOG) | tail -n 40; echo "(full log: $(CHAOS_LOG))"; \
	grep '^chaos: ' $(CHAOS_LOG) | tail -n 1; exit $$status

## bench: run the benchmarks (grant overhead, pipeline throughput, expiry precision)
bench: devvault
	$(TEST_ENV) $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./...

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

## clean: remove bin/stint and the development state in var/ (keeps bin/vault, which takes minutes to build)
clean:
	rm -rf $(BIN)/stint var

## distclean: clean, and remove the development Vault binary too
distclean: clean
	rm -rf $(BIN)
