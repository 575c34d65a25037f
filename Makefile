# veneur build, run and test entry points. See README.md.

GO            ?= go
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN           := bin/veneur
DEV_CONFIG    := config/dev.yaml
PKGS          := ./...
# The commit the binary is built from, for `veneur -version` and /version.
VERSION       := $(shell git describe --always --dirty 2>/dev/null)
LDFLAGS       := $(if $(VERSION),-ldflags "-X github.com/veneur/veneur.VERSION=$(VERSION)")

.PHONY: all build run test lint test-unit test-race bench bench-load bench-load-rcvbuf deps generate clean

all: build

build:
	$(GO) build $(LDFLAGS) -o $(BIN) ./cmd/veneur
	$(GO) build $(LDFLAGS) -o bin/veneur-proxy ./cmd/veneur-proxy

# Starts veneur on a development config that needs no Datadog account: it
# listens on the usual ports and prints every flush to standard output.
run: build
	./$(BIN) -f $(DEV_CONFIG)

# Everything CI runs: lint first, then unit and end-to-end tests (fuzz seed
# corpora under testdata/fuzz run as ordinary tests), then the race detector.
test: deps lint test-unit test-race

# Installs what the tests need, saying what it installs; does nothing when
# all is present. A Debian package it installs is left with no service
# running or enabled at boot (.ci/deps, install_pkg).
deps:
	@./.ci/deps

lint:
	@unformatted=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)

# make test installs influxd (see deps), so its tests must not skip.
test-unit:
	VENEUR_REQUIRE_INFLUXD=1 VENEUR_REQUIRE_ETCD=1 $(GO) test -count=1 $(PKGS)

test-race:
	VENEUR_REQUIRE_INFLUXD=1 VENEUR_REQUIRE_ETCD=1 $(GO) test -race -count=1 $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# LOADGEN_FLAGS picks other workloads or settings, e.g. the global import
# workloads: make bench-load LOADGEN_FLAGS='-workloads g,d'
LOADGEN_FLAGS ?=
bench-load:
	$(GO) run ./cmd/veneur-loadgen $(LOADGEN_FLAGS)

# Issue 14's measurement: workload b (25 lines per datagram, 1,000 series,
# 1s interval), the server on one pinned core, the 2 MiB default receive
# buffer, 3 confirmations per rate, fixed rates of 1M and 3M lines/s, with
# veneur's reader gaps per trial (docs/benchmark.md).
bench-load-rcvbuf:
	$(GO) run ./cmd/veneur-loadgen -workloads b -rcvbuf 2097152 -confirm 3 -fixed-rate 1000000,3000000 $(LOADGEN_FLAGS)

# Regenerates the committed protobuf code (builds and tests do not need
# protoc): ssf/ssf.pb.go from ssf/ssf.proto, and the gRPC forwarding types
# of package forward, forward/metricpb/*.pb.go and
# forward/forwardrpc/*.pb.go, from the .proto files beside them. Needs
# Debian's protobuf-compiler (installed when missing); installs the Go
# plugins at the versions below. protoc-gen-go-grpc's generated code needs
# google.golang.org/grpc v1.64 or later (go.mod has v1.85.0).
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
PROTOC             := PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc --go_out=. --go_opt=paths=source_relative
generate:
	command -v protoc >/dev/null || apt-get install -y protobuf-compiler
	$(GO) install $(PROTOC_GEN_GO)
	$(GO) install $(PROTOC_GEN_GO_GRPC)
	$(PROTOC) ssf/ssf.proto
	$(PROTOC) forward/metricpb/tdigest.proto forward/metricpb/metric.proto
	$(PROTOC) --go-grpc_out=. --go-grpc_opt=paths=source_relative forward/forwardrpc/forward.proto

clean:
	rm -rf bin
