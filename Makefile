# aerogate: the two quick-start commands are `make dev` and `make test`.
GO      ?= go
BIN     ?= bin/aerogate
PKGS    ?= ./...

.PHONY: dev build test test-short vet fmt fuzz bench bench-gateway bench-e2e migrate clean

## dev: run every role in one process (embedded Kafka, fake Graph API, local Postgres)
dev: build
	$(BIN) dev

## build: the single binary
build:
	$(GO) build -o $(BIN) ./cmd/aerogate

## test: vet, formatting, then every test with the race detector (the CI command)
test: vet
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

test-short:
	$(GO) test -short -count=1 $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

## fuzz: run every fuzz target for FUZZTIME each
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

migrate: build
	$(BIN) migrate

clean:
	rm -rf bin .aerogate
