# cronkit: see README.md. Every target works from a clean checkout on Debian with Go.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build test unit test-integration bench lint fmt vulncheck demo sandbox crontab-check clean

all: build

build: ## the jobs binary, in bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/jobs ./cmd/jobs

test: ## unit + integration tests against a throwaway MariaDB, stripe-mock and mailpit
	scripts/test

unit: ## tests that need no server (integration tests skip)
	CRONKIT_TEST_DSN= CRONKIT_INTEGRATION= $(GO) test -count=1 ./...

test-integration: ## the same suite as test, race detector on
	scripts/test -race

bench: build ## performance ratios against baselines measured in the same run
	scripts/bench

lint: ## vet, gofmt, staticcheck
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) run $(STATICCHECK) ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

# vulncheck reads vuln.go.dev; GOVULNDB=file:///dir points it at a local copy (README).
vulncheck:
	$(GO) run golang.org/x/vuln/cmd/govulncheck@v1.9.0 $(if $(GOVULNDB),-db $(GOVULNDB)) ./...

demo: build ## MariaDB and the fakes on loopback, fixtures, every job dry-run then for real
	scripts/demo

sandbox: build ## the demo, then its world kept live until Ctrl-C, with the env lines that point jobs at it
	scripts/demo --keep

crontab-check: build ## parse every schedule in crontab/ and print the next runs
	bin/jobs crontab check --dir crontab

clean:
	-scripts/mariadb stop
	rm -rf bin .cache
