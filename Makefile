# cronkit: see README.md. Every target works from a clean checkout on Debian with Go.
GO       ?= go
# The release: the .debs, the image tag and crontab/k8s's image name carry it
# (scripts/checkimage checks the manifests name it). Bump all with a release.
VERSION  ?= 0.1.0
# What the binary reports (cronkit version): the commit, and its time, which is also
# every timestamp in the packages (SOURCE_DATE_EPOCH), so one commit builds one
# .deb and one image digest.
COMMIT   := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
COMMIT_TIME := $(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ)
export VERSION SOURCE_DATE_EPOCH
LDFLAGS  := -s -w -buildid= -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.commitTime=$(COMMIT_TIME)
# Static, no paths or build ids of this host: the same bytes on every machine with
# the same Go.
GOBUILD  := CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags '$(LDFLAGS)'
ARCHES   := amd64 arm64
IMAGE    ?= ghcr.io/cronkit/cronkit
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build test unit test-integration bench lint fmt vulncheck demo sandbox crontab-check chaos clean \
	binaries deb deb-check image image-check dist dist-check

all: build

build: ## the cronkit binary, in bin/ (cmd/jobs)
	$(GOBUILD) -o bin/cronkit ./cmd/jobs

binaries: ## static linux binaries for each of $(ARCHES), in dist/
	@mkdir -p dist
	for a in $(ARCHES); do GOOS=linux GOARCH=$$a $(GOBUILD) -o dist/cronkit_$(VERSION)_linux_$$a ./cmd/jobs || exit 1; done

deb: binaries ## dist/cronkit_<version>_<arch>.deb with nfpm (packaging/nfpm.yaml)
	scripts/builddeb $(ARCHES)

deb-check: deb ## contents and modes, systemd-analyze verify, lintian
	scripts/checkdeb $(ARCHES)

image: ## dist/cronkit_<version>_image.tar: docker-archive, static binary on an empty base
	@mkdir -p dist
	GOOS=linux GOARCH=amd64 $(GOBUILD) -o dist/.image/cronkit ./cmd/jobs
	$(GO) run ./tools/imagebuild --binary dist/.image/cronkit --tag $(IMAGE):$(VERSION) \
		--version $(VERSION) --revision $(COMMIT) --out dist/cronkit_$(VERSION)_image.tar

image-check: image ## crane validate, the config, and the binary run from the layer with chroot
	IMAGE=$(IMAGE) scripts/checkimage dist/cronkit_$(VERSION)_image.tar

dist: binaries deb image ## binaries, .debs, image tarball and SHA256SUMS in dist/
	cd dist && rm -f SHA256SUMS && sha256sum cronkit_$(VERSION)_* > SHA256SUMS && cat SHA256SUMS

dist-check: ## builds dist twice from this commit and compares the bytes
	scripts/checkrepro

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

# vulncheck reads vuln.go.dev; GOVULNDB=file:///dir points it at a local copy (README).
vulncheck:
	$(GO) run golang.org/x/vuln/cmd/govulncheck@v1.9.0 $(if $(GOVULNDB),-db $(GOVULNDB)) ./...

demo: build ## MariaDB and the fakes on loopback, fixtures, every job dry-run then for real
	scripts/demo

sandbox: build ## the demo, then its world kept live until Ctrl-C, with the env lines that point jobs at it
	scripts/demo --keep

crontab-check: build ## parse every schedule in crontab/ and print the next runs
	bin/cronkit crontab check --dir crontab

clean:
	-scripts/mariadb stop
	rm -rf bin dist .cache
