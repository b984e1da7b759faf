# nri-volumes: build, test, demo.
#
# make test runs the unit tests (with -race) and then the end-to-end tests,
# which start a real containerd and need root; hack/install-runtime.sh builds
# that containerd (pinned in hack/versions.env) into $(NRI_VOLUMES_TEST_CACHE).

GO ?= go
PKG := github.com/nri-volumes/nri-volumes
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
NRI_VOLUMES_TEST_CACHE ?= /var/cache/nri-volumes-test/bin
export NRI_VOLUMES_TEST_CACHE

E2E_TIMEOUT ?= 30m
UNIT_TIMEOUT ?= 10m

.PHONY: all build test test-unit test-e2e deps runtime runtime-base demo bench lint fuzz structure clean

all: build

# Static, as the release image builds them: a dynamically linked hook spends
# a millisecond of every container start loading libc (issue 13).
build:
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/nri-volumes ./cmd/nri-volumes-hook

# deps first: without e2fsprogs, btrfs-progs, xfsprogs and busybox-static the
# unit tests that need them skip, so on a fresh machine they would be lost.
test: deps test-unit test-e2e

test-unit:
	$(GO) test -race -timeout $(UNIT_TIMEOUT) $$($(GO) list ./... | grep -v '^$(PKG)/test/e2e$$')

# runtime is what the tests run: runtime-base (containerd, ctr, the shim,
# runc, crictl), an older containerd and the kubelet, the longest build.
# The demo and the bench need only runtime-base.
runtime: deps
	bash hack/install-runtime.sh "$(NRI_VOLUMES_TEST_CACHE)"
	bash hack/install-registry.sh "$(NRI_VOLUMES_TEST_CACHE)"

runtime-base: deps
	bash hack/install-runtime.sh --base "$(NRI_VOLUMES_TEST_CACHE)"

# The Debian packages the tests, the demo and the runtime's build need
# (apt, only those missing).
deps:
	bash hack/install-deps.sh

# One package at a time: every test runs its own containerd.
test-e2e: runtime
	$(GO) test -p 1 -count=1 -v -timeout $(E2E_TIMEOUT) ./test/e2e/...

demo: runtime-base
	$(GO) run ./test/demo

# Go benchmarks, then containerd with and without the plugin side by side
# (needs root, 15-30 min on 2 cores); the report goes to bin/bench-results.md. BENCH_ARGS
# go to test/bench, e.g. BENCH_ARGS='-n 10 -only imagevolume'.
bench: runtime-base
	GO='$(GO)' bash hack/bench.sh $(BENCH_ARGS)

# How the files of package volumes depend on each other (issue 20): the loop
# of files that call each other, the Store's methods, the files one
# CreateContainer passes through and back, the functions over 80 lines.
structure:
	cd hack/structure && $(GO) run . -repo ../..

# Every fuzz target for FUZZTIME each (CI runs them briefly; run longer by hand).
FUZZTIME ?= 15s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "--- $$pkg $$f ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -timeout 0 $$pkg || exit 1; \
		done; \
	done

lint:
	@out="$$(gofmt -l .)"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
