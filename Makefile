# vigil — see README.md.
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN         := bin

.PHONY: all build test vet staticcheck unit run bench fuzz soak clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# The README's test command; .ci/run calls it.
test: vet staticcheck unit

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

# The demo: three backends (demo-2 turns NOT_SERVING 8 s in, for 8 s, every
# 40 s), vigil serving config.example.yaml, and a client on each listener.
# Ctrl-C stops every process it started.
run: build
	$(BIN)/demo-run -bin $(BIN) -config config.example.yaml

# Fuzz the config parser (FUZZTIME=5m for a longer run).
FUZZTIME ?= 1m
fuzz:
	$(GO) test -run '^$$' -fuzz=FuzzParse -fuzztime=$(FUZZTIME) ./internal/config

clean:
	rm -rf $(BIN) .run
