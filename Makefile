# veneur build, run and test entry points. See README.md.

GO            ?= go
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN           := bin/veneur
DEV_CONFIG    := config/dev.yaml
PKGS          := ./...
# The commit the binary is built from, for `veneur -version` and /version.
VERSION       := $(shell git describe --always --dirty 2>/dev/null)
LDFLAGS       := $(if $(VERSION),-ldflags "-X github.com/veneur/veneur.VERSION=$(VERSION)")

.PHONY: all build run test lint test-unit test-race bench bench-load deps generate clean

all: build

build:
	$(GO) build $(LDFLAGS) -o $(BIN) ./cmd/veneur

# Starts veneur on a development config that needs no Datadog account: it
# listens on the usual ports and prints every flush to standard output.
run: build
	./$(BIN) -f $(DEV_CONFIG)

# Everything CI runs: lint first, then unit and end-to-end tests (fuzz seed
# corpora under testdata/fuzz run as ordinary tests), then the race detector.
test: deps lint test-unit test-race

# Installs what the tests need. Idempotent; does nothing when all is present.
deps:
	@./.ci/deps

lint:
	@unformatted=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)

# make test installs influxd (see deps), so its tests must not skip.
test-unit:
	VENEUR_REQUIRE_INFLUXD=1 $(GO) test -count=1 $(PKGS)

test-race:
	VENEUR_REQUIRE_INFLUXD=1 $(GO) test -race -count=1 $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

bench-load:
	$(GO) run ./cmd/veneur-loadgen

# Regenerates ssf/ssf.pb.go from ssf/ssf.proto (the result is committed;
# builds and tests do not need protoc). Needs Debian's protobuf-compiler.
PROTOC_GEN_GO := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
generate:
	command -v protoc >/dev/null || apt-get install -y protobuf-compiler
	$(GO) install $(PROTOC_GEN_GO)
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc --go_out=. --go_opt=paths=source_relative ssf/ssf.proto

clean:
	rm -rf bin
