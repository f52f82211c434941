# cronkit: see README.md. Every target works from a clean checkout on Debian with Go.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build test unit test-integration bench lint fmt vulncheck demo crontab-check chaos clean

all: build

build: ## the jobs binary, in bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/jobs ./cmd/jobs

test: ## unit + integration tests against a throwaway MariaDB, stripe-mock and mailpit
	scripts/test

unit: ## tests that need no server (integration tests skip)
	CRONKIT_TEST_DSN= CRONKIT_INTEGRATION= $(GO) test -count=1 ./...

test-integration: ## the same suite as test, race detector on
	scripts/test -race

chaos: ## the fault suite (every job x dependency x fault, through toxiproxy) and the load test; prints the table
	@mkdir -p bin
	@echo "chaos: the whole matrix (a few minutes); log in bin/chaos.log"
	@rc=0; CRONKIT_CHAOS=full CRONKIT_CHAOS_TABLE=$(CURDIR)/bin/chaos-table.txt \
	  scripts/test -run '^(TestChaos|TestLoadTenAtOnce)$$' -parallel 4 -v >bin/chaos.log 2>&1 || rc=$$?; \
	  cat bin/chaos-table.txt 2>/dev/null; \
	  if [ $$rc -ne 0 ]; then grep -E -- '--- FAIL|^\s+chaos_test.go:[0-9]+: [^{]' bin/chaos.log | grep -v 'converged true' | head -40; \
	  echo "chaos: FAILED (exit $$rc), see bin/chaos.log"; fi; exit $$rc

bench: build ## performance ratios against baselines measured in the same run
	scripts/bench

lint: ## vet, gofmt, staticcheck
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) run $(STATICCHECK) ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

vulncheck:
	$(GO) run golang.org/x/vuln/cmd/govulncheck@v1.9.0 ./...

demo: build ## MariaDB and the fakes on loopback, fixtures, every job dry-run then for real
	scripts/demo

crontab-check: build ## parse every schedule in crontab/ and print the next runs
	bin/jobs crontab check --dir crontab

clean:
	-scripts/mariadb stop
	rm -rf bin .cache
