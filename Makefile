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

clean:
	rm -rf $(BIN) .run
