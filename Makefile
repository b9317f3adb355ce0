# secure-chat: build, run and test.
#
#   make run-server   make the local certificates if missing, then run the server
#                     (its rooms kept in data/, the default --data-dir)
#   make run-client   run the client (in another terminal)
#   make cluster-demo Redis and two servers sharing one chat (haproxy in front
#                     if installed); prints how to connect
#   make test         install what the tests need (scripts/need.sh), lint,
#                     then every test (the bench crate's too), then the library's
#                     unit tests and tests/cli.rs without the redis feature
#   make bench        the benchmark suite against a fresh chat-server
#   make bench-compare  the same, interleaved, beside two Go servers and ncat
#   make fuzz         each fuzz target for FUZZ_SECONDS (default 30), from fuzz/seeds
#
# CERTS_DIR=dir puts the certificates elsewhere (the tests use a temp dir).
# SAN='chat.example.org 192.0.2.10' adds names to the server certificate,
# beside localhost, 127.0.0.1 and ::1: the names and addresses other
# machines reach this one by (IP addresses are told from DNS names).

CERTS_DIR ?= certs
CARGO     ?= cargo
OPENSSL   ?= openssl
# Extra flags for run-server and run-client, e.g. make run-client ARGS='--addr localhost:9000'
ARGS      ?=

# The local CA lives ten years; the server certificate 825 days, the longest
# any client platform accepts for a leaf.
CA_DAYS     = 3650
SERVER_DAYS = 825

.PHONY: all build certs client-cert clean-certs run-server run-client cluster-demo test lint clean bench bench-compare go-peer fuzz

all: build

build:
	$(CARGO) build --release

certs: $(CERTS_DIR)/ca.crt $(CERTS_DIR)/server.crt

# A local certificate authority: ECDSA P-256, allowed to sign certificates
# and nothing else. Its key never leaves CERTS_DIR.
$(CERTS_DIR)/ca.crt:
	@mkdir -p $(CERTS_DIR)
	@umask 077 && $(OPENSSL) genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $(CERTS_DIR)/ca.key
	$(OPENSSL) req -x509 -new -key $(CERTS_DIR)/ca.key -sha256 -days $(CA_DAYS) \
	  -subj "/CN=secure-chat local CA" \
	  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
	  -addext "keyUsage=critical,keyCertSign,cRLSign" \
	  -out $@

# The server's certificate, signed by the CA: a leaf (CA:FALSE) for TLS
# servers, valid for the names clients use to reach this machine:
# localhost, 127.0.0.1 and ::1, and each word of SAN. A word with a colon
# (IPv6) or of digits and dots only (IPv4) is an IP address, any other a
# DNS name. SAN counts only when the certificate is made: to add names
# later, `rm certs/server.crt` and make it again (the CA stays; the new
# certificate has a new key, so its fingerprint changes).
SAN ?=
$(CERTS_DIR)/server.crt: $(CERTS_DIR)/ca.crt
	@set -f; san='DNS:localhost,IP:127.0.0.1,IP:::1'; \
	for name in $(SAN); do \
	  case "$$name" in \
	    *[!A-Za-z0-9.:*-]*) echo "SAN: '$$name' is not a DNS name or an IP address" >&2; exit 2;; \
	    *:*) san="$$san,IP:$$name";; \
	    *[!0-9.]*) san="$$san,DNS:$$name";; \
	    *) san="$$san,IP:$$name";; \
	  esac; \
	done; \
	printf '%s\n' \
	  'basicConstraints=critical,CA:FALSE' \
	  'keyUsage=critical,digitalSignature' \
	  'extendedKeyUsage=serverAuth' \
	  "subjectAltName=$$san" > $(CERTS_DIR)/server.ext
	@umask 077 && $(OPENSSL) genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $(CERTS_DIR)/server.key
	$(OPENSSL) req -new -key $(CERTS_DIR)/server.key -subj "/CN=localhost" -out $(CERTS_DIR)/server.csr
	$(OPENSSL) x509 -req -in $(CERTS_DIR)/server.csr -CA $(CERTS_DIR)/ca.crt -CAkey $(CERTS_DIR)/ca.key \
	  -set_serial 0x$$($(OPENSSL) rand -hex 16) -days $(SERVER_DAYS) -sha256 \
	  -extfile $(CERTS_DIR)/server.ext -out $@
	@rm -f $(CERTS_DIR)/server.csr $(CERTS_DIR)/server.ext

# A client certificate for mutual TLS: make client-cert NAME=alice makes
# certs/alice.crt and certs/alice.key, signed by the local CA, for
# `chat-server --client-ca certs/ca.crt` (the name becomes the nick).
NAME ?=
CLIENT_DAYS = 825
client-cert: $(CERTS_DIR)/ca.crt
	@test -n "$(NAME)" || { echo "usage: make client-cert NAME=alice" >&2; exit 2; }
	@case "$(NAME)" in ca|server|*[!A-Za-z0-9_-]*) echo "NAME must be a nick (letters, digits, _ or -), not ca or server" >&2; exit 2;; esac
	@umask 077 && $(OPENSSL) genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $(CERTS_DIR)/$(NAME).key
	$(OPENSSL) req -new -key $(CERTS_DIR)/$(NAME).key -subj "/CN=$(NAME)" -out $(CERTS_DIR)/$(NAME).csr
	@printf '%s\n' \
	  'basicConstraints=critical,CA:FALSE' \
	  'keyUsage=critical,digitalSignature' \
	  'extendedKeyUsage=clientAuth' > $(CERTS_DIR)/$(NAME).ext
	$(OPENSSL) x509 -req -in $(CERTS_DIR)/$(NAME).csr -CA $(CERTS_DIR)/ca.crt -CAkey $(CERTS_DIR)/ca.key \
	  -set_serial 0x$$($(OPENSSL) rand -hex 16) -days $(CLIENT_DAYS) -sha256 \
	  -extfile $(CERTS_DIR)/$(NAME).ext -out $(CERTS_DIR)/$(NAME).crt
	@rm -f $(CERTS_DIR)/$(NAME).csr $(CERTS_DIR)/$(NAME).ext

clean-certs:
	rm -f $(CERTS_DIR)/*.crt $(CERTS_DIR)/*.key $(CERTS_DIR)/*.csr $(CERTS_DIR)/*.ext

run-server: certs build
	./target/release/chat-server $(ARGS)

run-client: build
	./target/release/chat-client $(ARGS)

# Two servers on loopback that share one chat through a Redis of their own
# (Debian's redis-server), and haproxy in front if it is installed:
# scripts/cluster-demo.sh. DEMO_PORT=8080 and DEMO_REDIS_PORT=6380 move them.
cluster-demo: certs build
	CERTS_DIR=$(CERTS_DIR) ./scripts/cluster-demo.sh

# The core builds and lints without the `redis` feature too: nothing
# outside src/linked/ may come to need Redis unnoticed.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --no-default-features --all-targets -- -D warnings

# First what the tests run beyond Rust (redis-server, haproxy, script,
# ...): scripts/need.sh installs what is missing when run as root, or
# stops at once with the command to run. Then, without the `redis`
# feature, the library's unit tests and tests/cli.rs (which checks that
# --redis is then refused with how to build it in): the single-server
# path must pass with no Redis crate.
test:
	@./scripts/need.sh test
	@$(MAKE) --no-print-directory lint
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --no-default-features --lib --test cli

# The benchmark suite (bench/README.md): each measurement against a fresh
# chat-server that the suite starts and stops itself, then one table. The
# server runs pinned to half the cores and the bench to the other half
# (ARGS=--no-pin to share them). More with ARGS, e.g.
# ARGS='--rounds 3 --out bench.md'.
bench: certs
	$(CARGO) build --release --workspace
	./target/release/chat-bench suite --certs $(CERTS_DIR) $(ARGS)

# The same suite, ROUNDS times, each measurement interleaved across four
# servers: ours, the Go peer in the original app's style and as a tuned
# hub (bench/go-peer, built with Debian's golang-go), and `ncat --ssl
# --chat` (Debian's ncat), both installed first as make test does. Writes
# the side-by-side table, with ratios and their spread over the rounds,
# then every round, to OUT. Takes about ten minutes a round. Exits 0 when ours passed every check: a peer's failures are
# results, named under the table.
ROUNDS ?= 3
OUT    ?= target/bench-compare.md
bench-compare: certs
	@./scripts/need.sh compare
	@$(MAKE) --no-print-directory go-peer
	$(CARGO) build --release --workspace
	./target/release/chat-bench suite --certs $(CERTS_DIR) --rounds $(ROUNDS) \
	  --peers secure-chat,go-naive,go-hub,ncat --out $(OUT) $(ARGS)

# The Go comparison server; Go 1.19 or later, standard library only.
go-peer:
	@command -v go >/dev/null || { echo "Go is missing: apt-get install golang-go (or see https://go.dev/dl)" >&2; exit 1; }
	mkdir -p target/go-peer
	cd bench/go-peer && go build -o ../../target/go-peer/chat-peer .

# Coverage-guided fuzzing of what peers send (fuzz/, a crate of its own):
# each target in turn, from the hand-made seeds plus the corpus earlier runs
# grew in fuzz/corpus. A crash or a failed check stops make, and libFuzzer
# leaves the input in fuzz/artifacts/TARGET. Needs cargo-fuzz. ASan needs a
# nightly compiler (-Zsanitizer), so the targets run without a sanitizer on
# stable Rust: the code they reach is safe Rust, whose bugs are panics, and
# cargo fuzz keeps debug assertions and overflow checks on.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS  = line_framer protocol_parse x509_subject
fuzz:
	@./scripts/need.sh fuzz
	cd fuzz && $(CARGO) fuzz build --sanitizer none
	@set -e; for target in $(FUZZ_TARGETS); do \
	  echo "fuzz: $$target for $(FUZZ_SECONDS) s"; \
	  mkdir -p fuzz/corpus/$$target; \
	  (cd fuzz && $(CARGO) fuzz run --sanitizer none $$target corpus/$$target seeds/$$target \
	    -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1); \
	done

clean:
	$(CARGO) clean
