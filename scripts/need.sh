#!/bin/sh
# What a make target needs beyond Rust, checked before anything is built.
#
#   scripts/need.sh test|fuzz|compare   check; install what is missing
#   scripts/need.sh --list TARGET       print each PROGRAM:PACKAGE pair
#
# A missing program is installed with Debian's apt-get when this runs as
# root; otherwise the script stops at once and prints the exact command
# to run. Rust components (rustfmt, clippy, cargo-fuzz) belong to the
# user and are added with rustup or cargo whoever runs this.
set -eu

# PROGRAM:PACKAGE, the program the tests or the target run and the Debian
# package that has it.
wants() {
  case "$1" in
    # The tests run make (the Makefile's own targets), openssl (make certs,
    # s_client), kill and a shell, script (a pseudo-terminal for the
    # client's tests), prlimit (a running server's open-files limit, and
    # a file size limit standing for a full disk), setpriv (root without
    # its power over file modes, to meet a read-only directory), stty
    # and base64, redis-server (the linked servers' tests start their own
    # on a loopback port) and haproxy (make cluster-demo puts it in front
    # of its two servers; its test covers both cases; the demo waits with
    # redis-cli), promtool (the metrics' test checks a scrape with it),
    # systemd-analyze (the service unit's test verifies the unit) and
    # sqlite3 (the store's test follows its recovery advice). cc links
    # Rust programs and builds the C of the TLS library's cryptography.
    test) echo "cc:gcc make:make openssl:openssl kill:procps script:bsdutils \
prlimit:util-linux setpriv:util-linux stty:coreutils base64:coreutils \
redis-server:redis-server redis-cli:redis-tools haproxy:haproxy promtool:prometheus \
systemd-analyze:systemd sqlite3:sqlite3" ;;
    # libFuzzer, which cargo-fuzz builds, is C++.
    fuzz) echo "c++:g++" ;;
    # The peers of make bench-compare: the Go servers and ncat.
    compare) echo "go:golang-go ncat:ncat" ;;
    *) echo "usage: $0 [--list] test|fuzz|compare" >&2; exit 2 ;;
  esac
}

if [ "${1:-}" = --list ]; then
  for want in $(wants "${2:-}"); do echo "$want"; done
  exit 0
fi
target=${1:-}
list=$(wants "$target")

# True if PATH holds the program as a file: `command -v` would also find
# the shell's own `kill`, and the tests run kill(1), not the shell's.
on_path() {
  (
    IFS=:
    for dir in $PATH; do
      [ -f "${dir:-.}/$1" ] && [ -x "${dir:-.}/$1" ] && exit 0
    done
    exit 1
  )
}

# Packages of the programs not on PATH, each named once.
missing() {
  packages=""
  for want in $list; do
    on_path "${want%%:*}" && continue
    case " $packages " in
      *" ${want#*:} "*) ;;
      *) packages="$packages ${want#*:}" ;;
    esac
  done
  echo "${packages# }"
}

packages=$(missing)
if [ -n "$packages" ]; then
  install="apt-get install -y --no-install-recommends $packages"
  if ! on_path apt-get; then
    echo "make $target needs programs from these Debian packages, and this" >&2
    echo "machine has no apt-get: install their equivalents: $packages" >&2
    exit 1
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "make $target needs the Debian packages: $packages" >&2
    echo "install them, then run make $target again:" >&2
    echo "  sudo apt-get update && sudo $install" >&2
    exit 1
  fi
  echo "make $target: installing $packages (apt-get, as root)"
  apt-get update
  DEBIAN_FRONTEND=noninteractive $install
  packages=$(missing)
  if [ -n "$packages" ]; then
    echo "make $target: still missing after apt-get: $packages" >&2
    exit 1
  fi
fi

# Rust's own pieces: the linters for make test, cargo-fuzz for make fuzz
# (the 0.13 line, whose --sanitizer none runs on stable Rust).
case "$target" in
  test)
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
      echo "make test: adding rustfmt and clippy (rustup component add)"
      rustup component add rustfmt clippy
    fi ;;
  fuzz)
    if ! cargo fuzz --version >/dev/null 2>&1; then
      echo "make fuzz: installing cargo-fuzz 0.13 (cargo install, a few minutes once)"
      cargo install cargo-fuzz --locked --version '^0.13'
    fi ;;
esac
