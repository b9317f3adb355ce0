#!/usr/bin/env bash
# The figures behind BENCHMARKS.md's "Several servers through Redis": one
# room of 100 clients on one server without Redis ("single"), on one
# server linked to Redis ("linked1"), and spread over two linked servers
# ("linked2"), interleaved round by round: a fan-out (10 senders x 2000
# lines) and a latency run (500 lines a second for 5 s). The Redis is the
# script's own (Debian's redis-server on a free loopback port), flushed
# before each run; its CPU time is read from /proc around each run.
#
#   bench/cluster.sh [ROUNDS] [OUT]      (from the repository's root)
#
# Needs `make build` (chat-bench too: cargo build --release --workspace)
# and `make certs`. Writes one line per run, `LABEL MODE redis_ticks=N
# RESULT ...` (ticks of 10 ms), then the medians.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-5}
OUT=${2:-target/cluster-bench.txt}
CERTS=${CERTS_DIR:-certs}
BENCH=./target/release/chat-bench
SERVER=./target/release/chat-server
for file in "$BENCH" "$SERVER" "$CERTS/ca.crt"; do
  [ -e "$file" ] || { echo "cluster: $file is missing (make build certs)" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "cluster: apt-get install redis-server" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d)
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" --save "" --daemonize no \
  --logfile "$dir/redis.log" &
redis_pid=$!
servers=
cleanup() {
  for pid in $servers $redis_pid; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# start NAME PORT [--redis]: a server, its PID in $started.
start() {
  local extra=()
  [ "${3:-}" = --redis ] && extra=(--redis "redis://127.0.0.1:$redis_port" --node-name "$1")
  "$SERVER" --addr "127.0.0.1:$2" --cert "$CERTS/server.crt" --key "$CERTS/server.key" \
    --rate 0 -q --no-data-dir "${extra[@]}" >/dev/null 2>>"$dir/$1.log" &
  started=$!
  servers="$servers $started"
  until (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; do sleep 0.05; done
}

stop_all() {
  for pid in $servers; do kill "$pid" 2>/dev/null || true; done
  for pid in $servers; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  done
  servers=
}

# measure LABEL MODE ADDRS PIDS
measure() {
  redis-cli -p "$redis_port" FLUSHALL >/dev/null
  local before after result
  before=$(cpu_ticks "$redis_pid")
  if [ "$2" = fanout ]; then
    result=$("$BENCH" fanout --addr "$3" --ca "$CERTS/ca.crt" --server-pid "$4" \
      --clients 100 --senders 10 --messages 2000 2>&1 | grep '^RESULT' || true)
  else
    result=$("$BENCH" latency --addr "$3" --ca "$CERTS/ca.crt" --server-pid "$4" \
      --clients 100 --rate 500 --seconds 5 2>&1 | grep '^RESULT' || true)
  fi
  after=$(cpu_ticks "$redis_pid")
  echo "$1 $2 redis_ticks=$((after - before)) $result" | tee -a "$OUT"
}

: >"$OUT"
port=$(free_port)
for round in $(seq "$ROUNDS"); do
  for mode in fanout latency; do
    start single "$port"; measure single "$mode" "127.0.0.1:$port" "$started"; stop_all
    start one "$port" --redis; measure linked1 "$mode" "127.0.0.1:$port" "$started"; stop_all
    start a "$port" --redis; a=$started
    start b $((port + 1)) --redis; b=$started
    measure linked2 "$mode" "127.0.0.1:$port,127.0.0.1:$((port + 1))" "$a,$b"; stop_all
  done
done

# Medians per label and mode. Redis's CPU per line: its ticks over the
# lines the run sent (fan-out 20,000; latency 2,500).
echo
for label in single linked1 linked2; do
  for mode in fanout latency; do
    grep "^$label $mode " "$OUT" | awk -v label="$label" -v mode="$mode" '
      function median(list, n,    i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
          if (list[j] < list[i]) { t = list[i]; list[i] = list[j]; list[j] = t }
        return n % 2 ? list[(n + 1) / 2] : (list[n / 2] + list[n / 2 + 1]) / 2
      }
      {
        n++
        for (f = 1; f <= NF; f++) { split($f, kv, "="); v[kv[1], n] = kv[2] }
      }
      END {
        lines = mode == "fanout" ? 20000 : 2500
        for (i = 1; i <= n; i++) {
          r[i] = v["redis_ticks", i] * 10000 / lines
          d[i] = v["deliveries_per_s", i]; c[i] = v["server_cpu_us_per_delivery", i]
          p[i] = v["p99_ms", i]; q[i] = v["p50_ms", i]
        }
        if (mode == "fanout")
          printf "%-8s fanout  deliveries/s %.2f M  server CPU/delivery %.3f us  redis CPU/line %.1f us  (%d runs)\n",
            label, median(d, n) / 1e6, median(c, n), median(r, n), n
        else
          printf "%-8s latency p50 %.2f ms  p99 %.2f ms  redis CPU/line %.0f us  (%d runs)\n",
            label, median(q, n), median(p, n), median(r, n), n
      }'
  done
done
