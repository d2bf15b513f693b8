# vigil — see README.md.
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN         := bin

.PHONY: all build test fmt vet staticcheck unit run run-tls bench fuzz soak clean test-h2spec test-dns test-kube test-browser bench-browser screenshot test-interop

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# The README's test command; .ci/run calls it.
test: fmt vet staticcheck unit

# gofmt over every Go file of the repository (the tools modules included).
fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

# HTTP/2 conformance of the grpc listener: every h2spec case against vigil
# in front of a real gRPC backend (h2spec pinned in .ci/install-h2spec).
test-h2spec:
	.ci/install-h2spec
	VIGIL_REQUIRE_TOOLS=1 VIGIL_H2SPEC=$$HOME/.cache/vigil/bin/h2spec $(GO) test -count=1 -run '^TestH2Spec' -v ./integration/

# The status page in a real headless chromium (Debian's, installed by
# .ci/install-chromium) against the real vigil and real backends;
# screenshots in bin/browser/. vigil is built without the race detector
# here (make test runs the integration suite with it): one test watches
# 10,000 endpoints.
BROWSER_TEST := VIGIL_REQUIRE_TOOLS=1 VIGIL_INTEGRATION_NORACE=1 $(GO) test -tags browser -count=1 -timeout 20m
test-browser:
	bash .ci/install-chromium
	$(GO) vet -tags browser ./integration/
	$(BROWSER_TEST) -run '^TestBrowser' ./integration/

# The status page's figures in the README: load time and memory at 100 and
# 10,000 endpoints, bytes/s while 100 endpoints flap, vigil's CPU with the
# page open and closed.
bench-browser:
	bash .ci/install-chromium
	$(BROWSER_TEST) -run '^$$' -bench BrowserPage -benchtime 1x ./integration/

# Refresh the README's screenshot of the status page
# (integration/testdata/status-page.png), stamped with the page's version;
# make test-browser fails when the page changed and the screenshot did not.
screenshot:
	bash .ci/install-chromium
	VIGIL_UPDATE_SCREENSHOT=1 $(BROWSER_TEST) -run '^TestBrowserScreenshot$$' -v ./integration/

# Discovery against a real DNS server: unbound, from Debian's package
# (.ci/install-dns installs it), started by the tests on 127.0.0.1. make test
# runs these tests too where unbound is installed, and skips them elsewhere;
# here a missing unbound fails them.
test-dns:
	.ci/install-dns
	VIGIL_TEST_DNS=1 $(GO) test -race -count=1 ./internal/dnstest/ ./internal/discovery/
	VIGIL_TEST_DNS=1 $(GO) test -race -count=1 -run '^TestDiscovery(DNS|SRV|Reload)' ./integration/

# Discovery against a real kube-apiserver and etcd, built from the Go module
# proxy by .ci/install-kube (cached under $$HOME/.cache/vigil; about 8
# minutes of both cores cold, nothing warm) and started by the tests on
# 127.0.0.1, in a network namespace of the tests' own (needs root).
test-kube:
	.ci/install-kube >/dev/null
	VIGIL_TEST_KUBE=1 $(GO) test -race -count=1 -timeout 20m ./internal/kubetest/ ./internal/discovery/ ./cmd/vigil/deploy/
	VIGIL_TEST_KUBE=1 $(GO) test -race -count=1 -timeout 20m -run '^TestDiscoveryKubernetes' ./integration/

# vigil against gRPC stacks that are not grpc-go, as backends and as
# clients: C-core (Debian's python3-grpcio) and grpc-js (npm), installed by
# .ci/install-interop; programs in integration/testdata/interop.
test-interop:
	.ci/install-interop
	VIGIL_REQUIRE_TOOLS=1 $(GO) test -count=1 -timeout 20m -run '^TestInterop(Python|Node)' -v ./integration/

# The demo: three backends (demo-2 turns NOT_SERVING 8 s in, for 8 s, every
# 40 s), vigil serving config.example.yaml, and a client on each listener.
# Ctrl-C stops every process it started.
run: build
	$(BIN)/demo-run -bin $(BIN) -config config.example.yaml

# The same demo over TLS: certificates generated at start into a temporary
# directory (nothing secret is shipped), TLS on the grpc listener, mTLS on
# the tcp listener; the clients verify vigil against the generated CA.
run-tls: build
	$(BIN)/demo-run -bin $(BIN) -config config.example.yaml -tls

# Fuzz the config parser, then hold the incremental reload parser to its
# output, then the grpc listener's header-block reader and encoder to
# x/net's, then the grpc listener's client side (arbitrary frame sequences
# against a judging backend); FUZZTIME=5m for longer runs.
FUZZTIME ?= 1m
fuzz:
	$(GO) test -run '^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./internal/config
	$(GO) test -run '^$$' -fuzz='^FuzzIncrementalMatchesParse$$' -fuzztime=$(FUZZTIME) ./internal/config
	$(GO) test -run '^$$' -fuzz='^FuzzHeaderReader$$' -fuzztime=$(FUZZTIME) ./internal/h2wire
	$(GO) test -run '^$$' -fuzz='^FuzzEncoder$$' -fuzztime=$(FUZZTIME) ./internal/h2wire
	$(GO) test -run '^$$' -fuzz='^FuzzClientFrames$$' -fuzztime=$(FUZZTIME) -timeout 0 ./balancer/grpcproxy

# Benchmarks, not part of make test (about 15 minutes; the machine's other
# load moves the figures: the summary shows the load average of each run).
# First the packages' micro-benchmarks, then the end-to-end ones against
# the real binary built without -race (integration/bench_*_test.go: vigil,
# HAProxy and nginx when installed, backends in helper processes, CPU and
# memory from /proc), then every figure next to its target. Raw outputs and
# the summary stay in bin/bench/. A failed benchmark fails the target; a
# missed target does not (benchsummary -strict would).
bench: SHELL := /bin/bash
bench: BENCH_OUT := $(BIN)/bench
bench: BENCH_E2E := VIGIL_INTEGRATION_NORACE=1 $(GO) test -run '^$$' -timeout 30m ./integration/
bench:
	@mkdir -p $(BENCH_OUT) && rm -f $(BENCH_OUT)/*.txt
	@echo "load average at start: $$(cat /proc/loadavg)"
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 200ms ./balancer/... ./checker/... ./internal/config/... ./internal/server/... 2>&1 | tee $(BENCH_OUT)/micro.txt
	$(BENCH_E2E) -bench TCPBulk -benchtime 3x 2>&1 | tee $(BENCH_OUT)/e2e-tcp.txt
	$(BENCH_E2E) -bench CheckCost -benchtime 1x 2>&1 | tee $(BENCH_OUT)/e2e-checkcost.txt
	$(BENCH_E2E) -bench GRPCLoad -benchtime 1x -count 3 2>&1 | tee $(BENCH_OUT)/e2e-grpc.txt
	$(BENCH_E2E) -bench Eviction -benchtime 1x 2>&1 | tee $(BENCH_OUT)/e2e-eviction.txt
	$(BENCH_E2E) -bench Scale -benchtime 1x 2>&1 | tee $(BENCH_OUT)/e2e-scale.txt
	$(BENCH_E2E) -bench Reload -benchtime 1x 2>&1 | tee $(BENCH_OUT)/e2e-reload.txt
	.ci/install-dns
	VIGIL_TEST_DNS=1 $(BENCH_E2E) -bench 'DiscoverySRV10000|DiscoveryChurn' -benchtime 1x 2>&1 | tee $(BENCH_OUT)/e2e-discovery-dns.txt
	.ci/install-kube >/dev/null
	VIGIL_TEST_KUBE=1 $(BENCH_E2E) -bench DiscoveryKubernetes10000 -benchtime 1x 2>&1 | tee $(BENCH_OUT)/e2e-discovery-kube.txt
	@echo "load average at end: $$(cat /proc/loadavg)"
	$(GO) run ./integration/benchutil/benchsummary -micro $(BENCH_OUT)/micro.txt $(BENCH_OUT)/e2e-*.txt | tee $(BENCH_OUT)/summary.txt; exit $${PIPESTATUS[0]}

# The soak (not in make test): steady mixed load through vigil while
# backends fail at random and the configuration is reloaded, for DURATION;
# it reports calls served and failed, evictions, readmissions, and vigil's
# RSS and goroutines over time, and fails on a leak or on a call that should
# not have failed. vigil is built without the race detector (SOAK_RACE=1
# keeps it); SOAK_SEED replays a fault schedule. See
# integration/chaos_soak_test.go.
DURATION ?= 10m
soak:
	VIGIL_INTEGRATION_NORACE=$(if $(SOAK_RACE),,1) $(GO) test -tags soak -run '^TestSoak$$' -count=1 -timeout 0 -v \
		./integration -soak.duration=$(DURATION) $(if $(SOAK_SEED),-soak.seed=$(SOAK_SEED))

clean:
	rm -rf $(BIN) .run
