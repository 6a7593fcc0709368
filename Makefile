# shutdownd — two set-up commands: `make demo` and `make test`.
# Everything they need is installed here: Go modules from go.mod/go.sum, and
# the Debian packages the integration and browser tests drive (when running
# as root and missing). Under CI=true a tool still missing is a failure.

GO       ?= go
BIN      := bin/shutdownd
VERSION  := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
DEB_PKGS := openssh-server ipmitool openipmi chromium nut-server nut-client
# tool -> Debian package providing it. For NUT the daemons themselves are
# listed: /usr/sbin/upsd is a wrapper that exits 0 without starting anything
# while /etc/nut/nut.conf says MODE=none (the package default), so tests run
# /lib/nut/upsd and the dummy-ups driver with their own configuration. upsmon
# (nut-client) is never run by a test: it is the program that powers a
# machine off.
TOOLS    := /usr/sbin/sshd:openssh-server /usr/bin/ipmitool:ipmitool /usr/bin/ipmi_sim:openipmi /usr/bin/chromium:chromium \
	/lib/nut/upsd:nut-server /lib/nut/dummy-ups:nut-server /usr/bin/upsc:nut-client

export CGO_ENABLED = 0

.PHONY: all build demo test test-integration bench deps tools vet fmt clean fuzz

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/shutdownd

demo: build
	./$(BIN) demo

## tools: install the Debian packages the tests need (root only), then verify.
tools:
	@missing=""; for t in $(TOOLS); do f=$${t%%:*}; p=$${t##*:}; [ -x "$$f" ] || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing:$$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing >/dev/null 2>&1 || \
		{ DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing >/dev/null; }; \
	fi; \
	missing=""; for t in $(TOOLS); do f=$${t%%:*}; [ -x "$$f" ] || missing="$$missing $$f"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$CI" = true ]; then echo "missing tools under CI=true:$$missing" >&2; exit 1; fi; \
		echo "warning: missing tools (their tests will skip):$$missing" >&2; \
	fi

deps:
	$(GO) mod download

# vet also fails on an untidy go.mod (a direct dependency marked
# "// indirect", a missing or unused requirement, a stale go.sum).
vet:
	$(GO) mod tidy -diff
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# -race needs cgo; the binary itself is built with CGO_ENABLED=0.
test: deps tools vet
	CGO_ENABLED=1 $(GO) test -race -timeout 14m -count=1 ./...
	$(MAKE) --no-print-directory fuzz

# fuzz: a short run of each fuzz target (seeds under testdata/fuzz and in
# the f.Add calls always run as plain tests). Each target runs a fixed number
# of inputs (-fuzztime Nx), not a wall-clock time: with a duration, Go 1.26's
# fuzz coordinator can report a spurious "context deadline exceeded" failure
# when the time runs out while a worker is mid-input (golang/go#75804, fixed
# in Go 1.27), which is what failed CI on a loaded machine. The counts give
# about 3-5 s per target on a quiet 2-core machine; FuzzRedfishResponses
# drives a real TLS session per input, so it gets far fewer. A hang is still
# caught by -timeout.
FUZZ_TARGETS := ./handlers:FuzzTriggerBody:6000 ./handlers:FuzzTokenHeaders:5000 \
	./handlers:FuzzClientIP:8000 ./config:FuzzParse:30000 \
	./runner/openstack:FuzzNovaResponses:5000 ./runner/openstack:FuzzDecodePage:30000 \
	./runner/bmc:FuzzRedfishResponses:200
fuzz: deps
	@for t in $(FUZZ_TARGETS); do p=$${t%%:*}; rest=$${t#*:}; f=$${rest%%:*}; n=$${rest##*:}; \
		echo "fuzz $$p $$f ($$n inputs)"; \
		out=$$($(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${n}x -timeout 5m $$p 2>&1) || \
		{ echo "$$out" | tail -40; exit 1; }; \
	done

test-integration: deps tools
	CGO_ENABLED=1 $(GO) test -race -count=1 -run Integration ./...

# The job page of a 2,000-VM / 100-host shutdown (issue 15), 20 renders
# each, then the site shutdown benchmarks.
bench: deps build
	$(GO) test -run '^$$' -bench BenchmarkJobPage -benchtime 20x -timeout 10m ./web
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./bench/...

clean:
	rm -rf bin
