# stowage: build, test and demo. `make` lists the targets.

GO       ?= go
MODULE   := github.com/stowage/stowage
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
FUZZTIME ?= 10s

# The root tier: packages whose tests need root, dockerd, loop devices or
# other services (they skip without them, but fail here, where
# STOWAGE_E2E_REQUIRED=1 is set). Every other package is in the hermetic tier.
ROOT_PKGS     := ./tests/... ./plugins/... ./volumed/... ./runtime/...
HERMETIC_PKGS  = $(shell $(GO) list ./... | grep -v -E '^$(MODULE)/(tests|plugins|volumed|runtime)(/|$$)')

.DEFAULT_GOAL := help
.NOTPARALLEL:
.PHONY: help build test deps vet test-hermetic test-root demo bench lint fuzz clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build static volumed, stow, stow-init and stow-provider into ./bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/volumed ./cmd/stow ./cmd/stow-init ./cmd/stow-provider

test: deps vet test-hermetic test-root test-rbd ## everything CI runs (as root): deps, vet, both test tiers, the RBD provider
# Under make test every component is installed, so no test of any tier may skip.
test: export STOWAGE_E2E_REQUIRED := 1

deps: ## install the packages and modules the tests need (as root)
	@tests/scripts/deps.sh

vet:
	$(GO) vet ./...

test-hermetic: ## tests of the packages outside the root tier, with -race
	@pkgs='$(HERMETIC_PKGS)'; \
	if [ -n "$$pkgs" ]; then $(GO) test -race $$pkgs; else echo "hermetic tier: no packages"; fi

test-root: ## tests of tests/, plugins/, volumed/ and runtime/ as root, nothing skipped
	@if [ "$$(id -u)" -ne 0 ]; then echo "test-root needs root (as a user, run: go test ./...)" >&2; exit 1; fi
	STOWAGE_E2E_REQUIRED=1 $(GO) test -race -count=1 -p 1 -timeout 45m $(ROOT_PKGS)

demo: ## run volumed with the local provider and use a volume through the plugin socket (root, no Docker)
	@tests/scripts/demo.sh

.PHONY: demo-rbd
demo-rbd: ## run a one-node Ceph cluster, stow-rbd and volumed; use an RBD volume, a snapshot and a copy (root, no Docker)
	@tests/scripts/demo-rbd.sh

bench: ## run the benchmarks
	@if [ -x tests/bench/bench.sh ]; then tests/bench/bench.sh; else echo "no benchmarks yet (tests/bench/bench.sh)"; fi

lint: ## gofmt and go vet
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fuzz: ## run every Fuzz test for FUZZTIME (default 10s)
	@found=0; \
	for f in $$(grep -rl --include='*_test.go' '^func Fuzz' . ); do \
		for fn in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			found=1; echo "== $$fn ($$(dirname $$f))"; \
			$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) ./$$(dirname $$f) || exit 1; \
		done; \
	done; \
	if [ $$found = 0 ]; then echo "no fuzz tests"; fi

.PHONY: provider-image
provider-image: build ## build bin/provider-image.tar, the local provider's image (stow image import bin/provider-image.tar stowage-provider)
	@tests/scripts/provider-image.sh bin/provider-image.tar bin/stow-provider

clean: ## remove build output
	rm -rf bin

# The RBD provider and its sidecar need cgo, librados/librbd and the build
# tags "ceph" (the provider) and "pacific" (Debian 12's Ceph 16 for go-ceph).
RBD_TAGS := ceph,pacific
RBD_PKGS := ./plugins/rbd/... ./cmd/stow-rbd/...

.PHONY: build-rbd test-rbd vet-rbd
build-rbd: ## build bin/stow-rbd, the Ceph RBD provider's CSI sidecar (cgo; needs librbd-dev)
	CGO_ENABLED=1 $(GO) build -tags $(RBD_TAGS) -trimpath -ldflags '$(LDFLAGS)' -o bin/stow-rbd ./cmd/stow-rbd

.PHONY: rbd-image
rbd-image: build-rbd ## build bin/rbd-image.tar, stow-rbd's image for the bundled runtime (stow image import bin/rbd-image.tar stowage-rbd)
	@tests/scripts/rbd-image.sh bin/rbd-image.tar bin/stow-rbd

vet-rbd:
	CGO_ENABLED=1 $(GO) vet -tags $(RBD_TAGS) $(RBD_PKGS)

test-rbd: vet-rbd ## the RBD provider's tests against one-node Ceph clusters (root; tests/scripts/ceph.sh), nothing skipped
	@if [ "$$(id -u)" -ne 0 ]; then echo "test-rbd needs root" >&2; exit 1; fi
	CGO_ENABLED=1 STOWAGE_E2E_REQUIRED=1 $(GO) test -tags $(RBD_TAGS) -race -count=1 -p 1 -timeout 30m $(RBD_PKGS)
