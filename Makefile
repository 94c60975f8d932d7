# attestboot — the few commands a person runs. `make` lists them.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := $(PATH):/usr/local/go/bin

# Every module of the workspace, as import-path patterns (River's loop over `go list -m`).
MODULES  := $(shell go list -m -f '{{.Path}}' 2>/dev/null)
PACKAGES := $(addsuffix /...,$(MODULES))
MODDIRS  := $(shell go list -m -f '{{.Dir}}' 2>/dev/null)

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# gotestsum prints every test by name with its result, so a CI log shows what ran and what skipped.
GOTESTSUM   := gotest.tools/gotestsum@v1.13.0
TEST_FLAGS  ?= -count=1 -timeout 12m
BENCH       ?= .

.DEFAULT_GOAL := help

.PHONY: help
help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install the Debian packages the tests and the demo need (only those missing)
	@scripts/deps.sh

.PHONY: generate
generate: ## regenerate the Go code of the protobuf APIs
	cd proto && go tool buf generate

.PHONY: verify
verify: ## generated code up to date, buf lint, gofmt, go vet, staticcheck, go.mod tidy
	cd proto && go tool buf lint
	$(MAKE) --no-print-directory generate
	@git diff --exit-code --stat -- proto || { echo "generated code is stale: run 'make generate' and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- proto)" || { git status --short -- proto; echo "generate left new files: commit them" >&2; exit 1; }
	@out=$$(gofmt -l $(MODDIRS)); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; } >&2
	go vet $(PACKAGES)
	go run $(STATICCHECK) $(PACKAGES)
	@for d in $(MODDIRS); do \
		[ -n "$$(find $$d -name '*.go' -print -quit)" ] || continue; \
		(cd $$d && go mod tidy -diff) || { echo "go.mod/go.sum of $$d not tidy: run 'go mod tidy' there" >&2; exit 1; }; \
	done

.PHONY: test
test: deps ## run every module's tests against real Postgres, swtpm, WireGuard and cloud-init
	go run $(GOTESTSUM) --format testname --format-hide-empty-pkg -- $(TEST_FLAGS) -p 2 $(PACKAGES)
	scripts/check-compose

NODES ?= 5

.PHONY: demo
demo: deps ## boot NODES (default 5) swtpm nodes through the whole stack on this machine; Ctrl-C removes it all
	scripts/demo $(NODES)

# make bench NODES=1000 RATE=200: the boot storm's own default is 100 nodes, not the demo's 5.
BENCH_NODES = $(if $(filter command line environment,$(origin NODES)),$(NODES),100)
RATE ?= 0

.PHONY: bench
bench: deps ## boot storm: NODES (default 100) nodes at once or RATE/s through the whole stack; figures and chart in bench-results/
	scripts/bench $(BENCH_NODES) $(RATE)

.PHONY: bench-go
bench-go: ## run the Go benchmarks (BENCH=regexp) and print their figures
	go test -run '^$$' -bench '$(BENCH)' -benchmem $(PACKAGES)
