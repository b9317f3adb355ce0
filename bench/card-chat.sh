#!/usr/bin/env bash
# The figures behind BENCHMARKS.md's "The card's chat": examples/card-chat.rs
# (a thread per client, a crossbeam hub) beside chat-server, interleaved
# round by round, each run against a freshly started server:
#   fanout   100 clients, 10 senders x 2000 lines of 64 bytes
#   latency  100 receivers, one sender at 200 lines a second for 5 s
#   slow     50 readers (5 send 2000 lines of 1 KiB) alone, then beside
#            one client that never reads (each run may take 60 s)
#
#   bench/card-chat.sh [ROUNDS] [OUT]      (from the repository's root)
#
# Needs release builds (cargo build --release --workspace --examples) and
# `make certs`: card-chat reads certs/ in the directory it runs in, so this
# one's certs/ is used. Writes one line per run, `LABEL MODE RESULT ...`,
# then the medians.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
OUT=${2:-target/card-chat-bench.txt}
BENCH=./target/release/chat-bench
SERVER=./target/release/chat-server
CARD=./target/release/examples/card-chat
for file in "$BENCH" "$SERVER" "$CARD" certs/ca.crt certs/server.crt; do
  [ -e "$file" ] || {
    echo "card-chat.sh: $file is missing (cargo build --release --workspace --examples; make certs)" >&2
    exit 1
  }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# start LABEL PORT: that server on 127.0.0.1:PORT, its PID in $server.
start() {
  if [ "$1" = card-chat ]; then
    "$CARD" "127.0.0.1:$2" >/dev/null 2>>"$dir/$1.log" &
  else
    "$SERVER" --addr "127.0.0.1:$2" --cert certs/server.crt --key certs/server.key \
      --rate 0 -q --no-data-dir >/dev/null 2>>"$dir/$1.log" &
  fi
  server=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; do sleep 0.05; done
}

stop() {
  kill "$server" 2>/dev/null || true
  while kill -0 "$server" 2>/dev/null; do sleep 0.05; done
  server=
}

# measure LABEL MODE PORT: one run of chat-bench against the server started.
measure() {
  local peer=go args
  [ "$1" = chat-server ] && peer=secure-chat
  case "$2" in
    fanout) args=(fanout --clients 100 --senders 10 --messages 2000 --size 64) ;;
    latency) args=(latency --clients 100 --rate 200 --seconds 5) ;;
    # Long enough for card-chat, whose others wait for the stalled reader.
    slow) args=(slow --stalled 1 --run-wait 60 --stall-wait 30) ;;
  esac
  # A run whose checks fail exits 1; its RESULT line says why.
  result=$( ("$BENCH" "${args[@]}" --addr "127.0.0.1:$3" --ca certs/ca.crt --peer "$peer" \
    --server-pid "$server" --timeout 150 2>&1 || true) | grep '^RESULT' | tail -n 1)
  [ -n "$result" ] || result="RESULT status=no_result"
  echo "$1 $2 $result" | tee -a "$OUT"
}

: >"$OUT"
port=$(free_port)
for round in $(seq "$ROUNDS"); do
  for mode in fanout latency slow; do
    for label in chat-server card-chat; do
      start "$label" "$port"; measure "$label" "$mode" "$port"; stop
    done
  done
done

echo
for label in chat-server card-chat; do
  for mode in fanout latency slow; do
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
        for (i = 1; i <= n; i++) {
          d[i] = v["deliveries_per_s", i]; c[i] = v["server_cpu_us_per_delivery", i]
          q[i] = v["p50_ms", i]; p[i] = v["p99_ms", i]; u[i] = v["server_cpu_pct", i]
          s[i] = v["slowdown", i]; w[i] = v["seconds_with", i]
          # "na" when no cut was seen: left out, not counted as 0 s.
          if (v["stalled_cut_max_s", i] ~ /^[0-9.]+$/) k[++cuts] = v["stalled_cut_max_s", i]
          if (v["status", i] != "ok") bad++
        }
        if (mode == "fanout")
          printf "%-11s fanout  deliveries/s %.0f  server CPU/delivery %.3f us", label, median(d, n), median(c, n)
        else if (mode == "latency")
          printf "%-11s latency p50 %.2f ms  p99 %.2f ms  server CPU %.1f %%", label, median(q, n), median(p, n), median(u, n)
        else
          printf "%-11s slow    slowdown %.2f  seconds with the stalled reader %.2f  cut after %s", label, median(s, n), median(w, n), (cuts ? sprintf("%.1f s", median(k, cuts)) : "na")
        printf "  (%d runs, %d not ok)\n", n, bad
      }'
  done
done
