#!/usr/bin/env bash
# The figures behind BENCHMARKS.md's "Several servers through Redis": one
# room of 100 clients on one server without Redis ("single"), on one
# server linked to Redis ("linked1"), and spread over two linked servers
# ("linked2"), interleaved round by round: a fan-out (10 senders x 2000
# lines) and a latency run (500 lines a second for 5 s). The Redis is the
# script's own (Debian's redis-server on a free loopback port), flushed and
# its statistics reset before each run.
#
#   bench/cluster.sh [ROUNDS] [OUT]      (from the repository's root)
#
# LABELS (default "single linked1 linked2") picks the set-ups; "cluster1"
# and "cluster2" are one and two linked servers over a Redis Cluster of
# the script's own instead (six redis-server processes: three masters
# owning the usual thirds of the slots, a replica each, pinned as the one
# Redis is), e.g. LABELS="linked2 cluster2". For those, every master's and
# replica's CPU over the whole run (schedstat, before and after) comes too,
# per line sent: `m0_us_per_line=...`, `r0_...` for shard 0's replica.
# chat-bench's room is #lobby, whose slot one master owns: the figures show
# what one shard of a cluster carries and what the others pay for it.
#
# Needs `cargo build --release -p secure-chat -p chat-bench`, `make certs`
# and python3. Redis' CPU is its time on CPU from /proc/PID/task/*/schedstat
# (ns), sampled (every 50 ms in the fan-out, 250 ms in the latency run)
# by bench/redis-sample.py, which tells the steady state (the room's line
# number from past the clients' joins to the last line sent) from the
# set-up and the tear-down. Writes one line per run to OUT, `LABEL MODE round=N
# redis_... RESULT ...`, each run's samples and `INFO commandstats` to
# OUT.redis/, then every round and the medians.
#
# Pinning (PIN=0 turns it off; REDIS_CPUS, SERVER_CPUS, BENCH_CPUS, as
# taskset takes them, override it): with three CPUs or more, Redis gets
# the last one to itself and the rest are split in halves as the suite
# splits them (but by CPU, not by physical core), the servers on the first
# half, chat-bench on the others. With two, Redis
# shares the servers' CPU 0 and chat-bench has CPU 1: the system under test
# on one side, the load on the other.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-5}
OUT=${2:-target/cluster-bench.txt}
CERTS=${CERTS_DIR:-certs}
BENCH=./target/release/chat-bench
SERVER=./target/release/chat-server
SAMPLE=bench/redis-sample.py
for file in "$BENCH" "$SERVER" "$CERTS/ca.crt"; do
  [ -e "$file" ] || { echo "cluster: $file is missing (cargo build --release -p secure-chat -p chat-bench; make certs)" >&2; exit 1; }
done
for tool in redis-server redis-cli python3; do
  command -v "$tool" >/dev/null || { echo "cluster: $tool is missing" >&2; exit 1; }
done

# The CPUs this shell may use, in order.
read -r -a cpus <<<"$(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))')"
if [ "${PIN:-1}" = 0 ] || [ "${#cpus[@]}" -lt 2 ]; then
  redis_cpus=${REDIS_CPUS:-} server_cpus=${SERVER_CPUS:-} bench_cpus=${BENCH_CPUS:-}
elif [ "${#cpus[@]}" -eq 2 ]; then
  redis_cpus=${REDIS_CPUS:-${cpus[0]}}
  server_cpus=${SERVER_CPUS:-${cpus[0]}}
  bench_cpus=${BENCH_CPUS:-${cpus[1]}}
else
  rest=("${cpus[@]:0:${#cpus[@]}-1}")
  half=$((${#rest[@]} / 2))
  redis_cpus=${REDIS_CPUS:-${cpus[-1]}}
  server_cpus=${SERVER_CPUS:-$(IFS=,; echo "${rest[*]:0:half}")}
  bench_cpus=${BENCH_CPUS:-$(IFS=,; echo "${rest[*]:half}")}
fi
# The command that pins to a set of CPUs, or nothing. taskset executes
# the program in its own process, so $! of `"${on_x[@]}" prog &` is prog's.
on() { if [ -n "$1" ]; then echo "taskset -c $1"; fi; }
read -r -a on_redis <<<"$(on "$redis_cpus")"
read -r -a on_server <<<"$(on "$server_cpus")"
read -r -a on_bench <<<"$(on "$bench_cpus")"
echo "cluster: Redis on CPU ${redis_cpus:-any}, servers on ${server_cpus:-any}, chat-bench on ${bench_cpus:-any}" >&2

LABELS=${LABELS:-single linked1 linked2}
for label in $LABELS; do
  case $label in single | linked1 | linked2 | cluster1 | cluster2) ;;
    *) echo "cluster: unknown label $label (single linked1 linked2 cluster1 cluster2)" >&2; exit 1 ;;
  esac
done
wants() { [[ " $LABELS " == *" $1"* ]]; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Six distinct free ports whose cluster bus ports (port + 10000) are free too.
cluster_ports() {
  python3 -c '
import socket
held, ports = [], []
while len(ports) < 6:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    taken = [q + 10000 for q in ports] + ports
    if p + 10000 > 65535 or p in taken or p + 10000 in taken:
        s.close(); continue
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 10000))
    except OSError:
        s.close(); continue
    held += [s, b]; ports.append(p)
print(*ports)'
}
dir=$(mktemp -d)
redis_port= redis_pid=
cports=() cpids=()
servers=
sampler=
cleanup() {
  for pid in $sampler $servers $redis_pid "${cpids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in $sampler $servers $redis_pid "${cpids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
# wait_redis PORT PID: until it answers.
wait_redis() {
  until redis-cli -p "$1" ping >/dev/null 2>&1; do
    kill -0 "$2" 2>/dev/null || { echo "cluster: redis-server on $1 did not start" >&2; exit 1; }
    sleep 0.05
  done
}
if wants linked; then
  redis_port=$(free_port)
  "${on_redis[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" --save "" \
    --appendonly no --daemonize no --logfile "$dir/redis.log" &
  redis_pid=$!
  wait_redis "$redis_port" "$redis_pid"
fi
# The cluster, joined by hand as tests/support's RedisCluster joins it:
# nodes 0-2 the masters of shards 0-2, node 3+s shard s's replica. Its
# node timeout is Redis' default (15 s): a benchmark wants no failover.
if wants cluster; then
  read -r -a cports <<<"$(cluster_ports)"
  for port in "${cports[@]}"; do
    "${on_redis[@]}" redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" \
      --appendonly no --daemonize no --logfile "$dir/redis-$port.log" \
      --cluster-enabled yes --cluster-config-file "nodes-$port.conf" \
      --repl-diskless-sync-delay 0 &
    cpids+=("$!")
  done
  for i in 0 1 2 3 4 5; do wait_redis "${cports[i]}" "${cpids[i]}"; done
  ranges=("0 5460" "5461 10922" "10923 16383")
  for s in 0 1 2; do
    redis-cli -p "${cports[s]}" CLUSTER SET-CONFIG-EPOCH $((s + 1)) >/dev/null
    # shellcheck disable=SC2086 # the range is two words on purpose
    redis-cli -p "${cports[s]}" CLUSTER ADDSLOTSRANGE ${ranges[s]} >/dev/null
  done
  for i in 1 2 3 4 5; do redis-cli -p "${cports[0]}" CLUSTER MEET 127.0.0.1 "${cports[i]}" >/dev/null; done
  waited=0
  for s in 0 1 2; do
    master_id=$(redis-cli -p "${cports[s]}" CLUSTER MYID)
    until [ "$(redis-cli -p "${cports[s + 3]}" CLUSTER REPLICATE "$master_id")" = OK ]; do
      waited=$((waited + 1))
      [ "$waited" -lt 400 ] || { echo "cluster: the cluster's nodes never met" >&2; exit 1; }
      sleep 0.05
    done
  done
  # Up when every node says ok and every replica's link is up (the state
  # says ok before the replicas are attached).
  cluster_up() {
    local i
    for i in 0 1 2 3 4 5; do
      redis-cli -p "${cports[i]}" CLUSTER INFO | grep -q '^cluster_state:ok' || return 1
    done
    for i in 3 4 5; do
      redis-cli -p "${cports[i]}" INFO replication | grep -q '^master_link_status:up' || return 1
    done
  }
  waited=0
  until cluster_up; do
    waited=$((waited + 1))
    if [ "$waited" -ge 400 ]; then
      echo "cluster: the cluster did not come up within 20 s; its logs:" >&2
      tail -n 5 "$dir"/redis-*.log >&2
      exit 1
    fi
    sleep 0.05
  done
  # The shard of chat-bench's room: its master is the one sampled.
  lobby_slot=$(redis-cli -p "${cports[0]}" CLUSTER KEYSLOT 'room:{#lobby}')
  for s in 0 1 2; do
    read -r lo hi <<<"${ranges[s]}"
    if [ "$lobby_slot" -ge "$lo" ] && [ "$lobby_slot" -le "$hi" ]; then lobby_shard=$s; fi
  done
  echo "cluster: a Redis Cluster on ports ${cports[*]}; #lobby (slot $lobby_slot) on shard $lobby_shard" >&2
fi

# cpu_ns PID: a process' time on CPU so far, summed over its threads.
cpu_ns() {
  local total=0 stat
  for stat in /proc/"$1"/task/*/schedstat; do
    # A thread that ended since the listing has nothing to read.
    read -r ns _ 2>/dev/null <"$stat" && total=$((total + ns))
  done
  echo "$total"
}

# start NAME PORT [URL]: a server, linked through the Redis at URL if
# given; its PID in $started.
start() {
  local extra=()
  [ -n "${3:-}" ] && extra=(--redis "$3" --node-name "$1")
  "${on_server[@]}" "$SERVER" --addr "127.0.0.1:$2" --cert "$CERTS/server.crt" \
    --key "$CERTS/server.key" --rate 0 -q --no-data-dir "${extra[@]}" >/dev/null 2>>"$dir/$1.log" &
  started=$!
  servers="$servers $started"
  until (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; do
    kill -0 "$started" 2>/dev/null || { echo "cluster: $1 did not start: $(cat "$dir/$1.log")" >&2; exit 1; }
    sleep 0.05
  done
}

stop_all() {
  for pid in $servers; do kill "$pid" 2>/dev/null || true; done
  for pid in $servers; do wait "$pid" 2>/dev/null || true; done
  servers=
}

# The room's line number counts each client's join and leave notices
# besides the lines sent: the steady state is from past the joins to the
# last line sent.
CLIENTS=100
FANOUT_LINES=$((10 * 2000))
LATENCY_LINES=$((500 * 5))

# measure ROUND LABEL MODE ADDRS PIDS: over the one Redis, or over the
# cluster for the labels cluster1 and cluster2 (the lobby's master is then
# the Redis sampled; every node's CPU is read before and after).
measure() {
  local base="$OUT.redis/$1-$2-$3" result figures lines interval calls waited=0
  local redis_port=$redis_port redis_pid=$redis_pid nodes=() before=() per_node= i
  if [[ $2 == cluster* ]]; then
    redis_port=${cports[lobby_shard]} redis_pid=${cpids[lobby_shard]}
    nodes=("${cpids[@]}")
    for i in 0 1 2; do redis-cli -p "${cports[i]}" FLUSHALL >/dev/null; done
    for i in 0 1 2 3 4 5; do redis-cli -p "${cports[i]}" CONFIG RESETSTAT >/dev/null; done
  else
    redis-cli -p "$redis_port" FLUSHALL >/dev/null
    redis-cli -p "$redis_port" CONFIG RESETSTAT >/dev/null
  fi
  # A burst lasts a second or so and wants fine samples; at 500 lines a
  # second 250 ms will do, and the sampler's GETs cost Redis less.
  [ "$3" = fanout ] && interval=0.05 || interval=0.25
  for i in "${!nodes[@]}"; do before[i]=$(cpu_ns "${nodes[i]}"); done
  python3 "$SAMPLE" watch "$redis_port" "$redis_pid" "$interval" "$base.samples" &
  sampler=$!
  until [ -e "$base.samples.ready" ]; do
    kill -0 "$sampler" 2>/dev/null || { echo "cluster: the sampler stopped" >&2; exit 1; }
    waited=$((waited + 1))
    [ "$waited" -lt 200 ] || { echo "cluster: the sampler is not ready after 10 s" >&2; exit 1; }
    sleep 0.05
  done
  if [ "$3" = fanout ]; then
    lines=$FANOUT_LINES
    result=$("${on_bench[@]}" "$BENCH" fanout --addr "$4" --ca "$CERTS/ca.crt" --server-pid "$5" \
      --clients "$CLIENTS" --senders 10 --messages 2000 2>&1 | grep '^RESULT' || true)
  else
    lines=$LATENCY_LINES
    result=$("${on_bench[@]}" "$BENCH" latency --addr "$4" --ca "$CERTS/ca.crt" --server-pid "$5" \
      --clients "$CLIENTS" --rate 500 --seconds 5 2>&1 | grep '^RESULT' || true)
  fi
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" || true
  sampler=
  rm -f "$base.samples.ready"
  # Each node's CPU per line sent, set-up included: m<s> is shard s's
  # master, r<s> its replica.
  for i in "${!nodes[@]}"; do
    per_node+="$(awk -v name="$([ "$i" -lt 3 ] && echo m$i || echo r$((i - 3)))" \
      -v ns=$(($(cpu_ns "${nodes[i]}") - before[i])) -v lines="$lines" \
      'BEGIN { printf "%s_us_per_line=%.2f", name, ns / 1e3 / lines }') "
  done
  figures=$(python3 "$SAMPLE" figures "$base.samples" "$CLIENTS" $((CLIENTS + lines)))
  redis-cli -p "$redis_port" INFO commandstats | tr -d '\r' >"$base.commandstats"
  # Microseconds per call (wall time inside the command, scripts included)
  # of the commands a room line costs.
  calls=$(awk -F'[:,=]' '/^cmdstat_(evalsha|publish|spublish|xadd)(\||:)/ {
      sub(/^cmdstat_/, "", $1); sub(/\|.*/, "", $1)
      for (i = 2; i < NF; i++) if ($i == "usec_per_call") printf "redis_%s_us=%s ", $1, $(i + 1)
    }' "$base.commandstats")
  echo "$2 $3 round=$1 $figures ${calls}${per_node}$result" | tee -a "$OUT"
}

mkdir -p "$OUT.redis"
: >"$OUT"
port=$(free_port)
port_b=$(free_port)
for round in $(seq "$ROUNDS"); do
  for mode in fanout latency; do
    for label in $LABELS; do
      case $label in
        single) url= ;;
        linked*) url=redis://127.0.0.1:$redis_port ;;
        cluster*) url=redis://127.0.0.1:${cports[0]} ;;
      esac
      case $label in
        *2)
          start a "$port" "$url"; a=$started
          start b "$port_b" "$url"; b=$started
          measure "$round" "$label" "$mode" "127.0.0.1:$port,127.0.0.1:$port_b" "$a,$b" ;;
        single) start single "$port"; measure "$round" single "$mode" "127.0.0.1:$port" "$started" ;;
        *) start one "$port" "$url"; measure "$round" "$label" "$mode" "127.0.0.1:$port" "$started" ;;
      esac
      stop_all
    done
  done
done

# Every round, then the median, per label and mode. Redis' figures are
# its steady state: in the fan-out, lines through one Redis core (lines
# over Redis' CPU seconds while the room's number moved); at 500 lines a
# second, Redis' CPU per line over the same window.
echo
for label in $LABELS; do
  for mode in fanout latency; do
    [ "$mode" = fanout ] && lines=$FANOUT_LINES || lines=$LATENCY_LINES
    grep "^$label $mode " "$OUT" | awk -v label="$label" -v mode="$mode" -v lines="$lines" '
      function median(list, n,    i, j, t, s) {
        for (i = 1; i <= n; i++) s[i] = list[i]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
          if (s[j] < s[i]) { t = s[i]; s[i] = s[j]; s[j] = t }
        return n % 2 ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2
      }
      function rounds(list, n, fmt,    i, out) {
        for (i = 1; i <= n; i++) out = out (i > 1 ? " / " : "") sprintf(fmt, list[i])
        return out
      }
      {
        n++
        for (f = 1; f <= NF; f++) { split($f, kv, "="); v[kv[1], n] = kv[2] }
      }
      END {
        for (i = 1; i <= n; i++) {
          d[i] = v["deliveries_per_s", i] / 1e6; c[i] = v["server_cpu_us_per_delivery", i]
          p[i] = v["p99_ms", i]; q[i] = v["p50_ms", i]
          rate[i] = v["redis_lines_per_cpu_s", i] / 1000; per[i] = v["redis_us_per_line", i]
          whole[i] = v["redis_cpu_ms", i] * 1000 / lines
        }
        if (mode == "fanout") {
          printf "%-8s fanout  deliveries/s M %s, median %.2f\n", label, rounds(d, n, "%.2f"), median(d, n)
          printf "%-8s fanout  server CPU/delivery us %s, median %.3f\n", label, rounds(c, n, "%.3f"), median(c, n)
        } else {
          printf "%-8s latency p50 ms %s, median %.2f\n", label, rounds(q, n, "%.2f"), median(q, n)
          printf "%-8s latency p99 ms %s, median %.2f\n", label, rounds(p, n, "%.2f"), median(p, n)
        }
        if (label == "single") exit
        if (mode == "fanout")
          printf "%-8s fanout  Redis: k lines per CPU-second in the burst %s, median %.0f\n", label, rounds(rate, n, "%.0f"), median(rate, n)
        else
          printf "%-8s latency Redis: CPU per line at 500 lines/s, steady, us %s, median %.1f\n", label, rounds(per, n, "%.1f"), median(per, n)
        printf "%-8s %-7s Redis: CPU per line over the whole run, set-up included, us %s, median %.1f\n", label, mode, rounds(whole, n, "%.1f"), median(whole, n)
        if (label !~ /^cluster/) exit
        # Over a cluster the figures above are those of the lobby master;
        # then every node: m<s> the master of shard s, r<s> its replica.
        split("m0 m1 m2 r0 r1 r2", names, " ")
        for (k = 1; k <= 6; k++) {
          for (i = 1; i <= n; i++) node[i] = v[names[k] "_us_per_line", i]
          printf "%-8s %-7s Redis: %s CPU per line over the whole run, us %s, median %.1f\n", label, mode, names[k], rounds(node, n, "%.1f"), median(node, n)
        }
      }'
  done
done
