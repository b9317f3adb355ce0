#!/usr/bin/env bash
# The two sweeps behind BENCHMARKS.md's plots, against chat-server and the
# two Go peers, interleaved: delivery latency against load (100 receivers,
# one sender at 50 to 1600 lines a second), and server CPU per delivery
# against room size (10 to 10,000 clients, 5 senders, about 2 million
# deliveries each). Every run gets a fresh server on a free loopback port,
# stopped by PID when it is done.
#
#   bench/sweep.sh [ROUNDS] [OUT.csv]      (from the repository's root)
#
# Needs `make build`, `make go-peer` and `make certs`. Writes one CSV line
# per run: sweep,peer,x,round,value...; bench/plot.py draws them.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
OUT=${2:-target/sweep.csv}
CERTS=${CERTS_DIR:-certs}
BENCH=./target/release/chat-bench
SERVER=./target/release/chat-server
GO_PEER=./target/go-peer/chat-peer
for file in "$BENCH" "$SERVER" "$GO_PEER" "$CERTS/ca.crt"; do
  [ -e "$file" ] || { echo "sweep: $file is missing (make build go-peer certs)" >&2; exit 1; }
done
# Each client is a descriptor, in the bench and in the server.
ulimit -n "$(ulimit -Hn)"

server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap stop_server EXIT

# Starts PEER on a free port; sets server_pid, port and peer_kind.
start_server() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  case "$1" in
    secure-chat)
      "$SERVER" --addr "127.0.0.1:$port" --cert "$CERTS/server.crt" --key "$CERTS/server.key" \
        -q --rate 0 --no-data-dir --max-clients 10100 2>/dev/null &
      peer_kind=secure-chat ;;
    go-naive|go-hub)
      "$GO_PEER" -addr "127.0.0.1:$port" -cert "$CERTS/server.crt" -key "$CERTS/server.key" \
        -design "${1#go-}" -q 2>/dev/null &
      peer_kind=go ;;
  esac
  server_pid=$!
  # Ready once it accepts.
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
    sleep 0.05
  done
  echo "sweep: $1 did not start" >&2
  exit 1
}

# The value of KEY in a RESULT line, or na.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2" | head -1; }

mkdir -p "$(dirname "$OUT")"
echo "sweep,peer,x,round,p50_ms,p99_ms,server_cpu_pct,server_cpu_us_per_delivery,status" >"$OUT"
for round in $(seq "$ROUNDS"); do
  for rate in 50 100 200 400 800 1600; do
    for peer in secure-chat go-naive go-hub; do
      start_server "$peer"
      result=$("$BENCH" latency --peer "$peer_kind" --addr "127.0.0.1:$port" --ca "$CERTS/ca.crt" \
        --server-pid "$server_pid" --clients 100 --rate "$rate" --seconds 5 --timeout 60 2>/dev/null \
        | grep '^RESULT' || true)
      stop_server
      echo "latency,$peer,$rate,$round,$(field p50_ms "$result"),$(field p99_ms "$result"),$(field server_cpu_pct "$result"),na,$(field status "$result")" | tee -a "$OUT"
    done
  done
  for clients in 10 100 1000 10000; do
    senders=5
    messages=$((2000000 / (clients * senders)))
    for peer in secure-chat go-naive go-hub; do
      start_server "$peer"
      result=$("$BENCH" fanout --peer "$peer_kind" --addr "127.0.0.1:$port" --ca "$CERTS/ca.crt" \
        --server-pid "$server_pid" --clients "$clients" --senders "$senders" \
        --messages "$messages" --timeout 300 2>/dev/null | grep '^RESULT' || true)
      stop_server
      echo "fanout,$peer,$clients,$round,na,na,$(field server_cpu_pct "$result"),$(field server_cpu_us_per_delivery "$result"),$(field status "$result")" | tee -a "$OUT"
    done
  done
done
