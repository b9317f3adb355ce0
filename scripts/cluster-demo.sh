#!/bin/sh
# make cluster-demo: one Redis and two chat servers on loopback that act as
# one chat, and, if haproxy is installed, a TCP load balancer in front of
# them. Everything stops on Ctrl-C; nothing is left behind but the
# temporary directory's removal.
#
# Ports: DEMO_PORT (the balancer, default 8080), DEMO_A_PORT and
# DEMO_B_PORT (the servers, default DEMO_PORT+1 and +2), DEMO_REDIS_PORT
# (default 6380, not Redis' usual 6379, so a Redis already running is
# left alone).
set -eu

CERTS_DIR=${CERTS_DIR:-certs}
DEMO_PORT=${DEMO_PORT:-8080}
DEMO_REDIS_PORT=${DEMO_REDIS_PORT:-6380}
SERVER=${SERVER:-./target/release/chat-server}
A_PORT=${DEMO_A_PORT:-$((DEMO_PORT + 1))}
B_PORT=${DEMO_B_PORT:-$((DEMO_PORT + 2))}

command -v redis-server >/dev/null || {
  echo "redis-server is missing: apt-get install redis-server" >&2
  exit 1
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/chat-demo.XXXXXX")
pids=
# stop STATUS: everything started goes, then the script exits with
# STATUS (0 after Ctrl-C: stopping is what was asked).
stop() {
  trap - INT TERM EXIT
  # Servers first, so that they let their names go while Redis is there;
  # each is waited for (a second, then killed) before the next.
  for pid in $pids; do
    kill "$pid" 2>/dev/null || continue
    tries=0
    while kill -0 "$pid" 2>/dev/null; do
      tries=$((tries + 1))
      if [ "$tries" -gt 20 ]; then
        kill -9 "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.05
    done
  done
  rm -rf "$dir"
  echo "cluster-demo: stopped"
  exit "$1"
}
trap 'stop 0' INT TERM
trap 'stop $?' EXIT

redis-server --port "$DEMO_REDIS_PORT" --bind 127.0.0.1 --dir "$dir" --save "" \
  --appendonly no --daemonize no --logfile "$dir/redis.log" &
redis_pid=$!
# Redis is ready when it answers; the servers refuse to start before.
tries=0
until redis-cli -p "$DEMO_REDIS_PORT" ping >/dev/null 2>&1; do
  tries=$((tries + 1))
  [ "$tries" -lt 100 ] || { echo "redis-server did not start: $(tail -3 "$dir/redis.log")" >&2; exit 1; }
  sleep 0.1
done

url=redis://127.0.0.1:$DEMO_REDIS_PORT
"$SERVER" --addr "127.0.0.1:$A_PORT" --cert "$CERTS_DIR/server.crt" --key "$CERTS_DIR/server.key" \
  --redis "$url" --node-name a 2>"$dir/a.log" &
pids="$! $pids"
"$SERVER" --addr "127.0.0.1:$B_PORT" --cert "$CERTS_DIR/server.crt" --key "$CERTS_DIR/server.key" \
  --redis "$url" --node-name b 2>"$dir/b.log" &
pids="$! $pids"
pids="$pids $redis_pid"

balancer=
if command -v haproxy >/dev/null; then
  cat >"$dir/haproxy.cfg" <<CFG
global
  log stderr format short local0 warning
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend chat
  bind 127.0.0.1:$DEMO_PORT
  default_backend servers
backend servers
  balance leastconn
  server a 127.0.0.1:$A_PORT check
  server b 127.0.0.1:$B_PORT check
CFG
  haproxy -f "$dir/haproxy.cfg" 2>"$dir/haproxy.log" &
  pids="$! $pids"
  balancer=yes
fi

# Each server says where it listens once it does; one that exits (a port
# in use, say) has said why.
for log in a b; do
  tries=0
  until grep -q "listening on" "$dir/$log.log"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 100 ] || grep -q "^chat-server: " "$dir/$log.log"; then
      echo "server $log did not start:" >&2
      cat "$dir/$log.log" >&2
      exit 1
    fi
    sleep 0.1
  done
done

cat <<TEXT
cluster-demo: Redis on 127.0.0.1:$DEMO_REDIS_PORT, servers a (port $A_PORT) and b (port $B_PORT)
sharing one chat.

In two other terminals, one client on each server:

  ./target/release/chat-client --addr localhost:$A_PORT --nick alice
  ./target/release/chat-client --addr localhost:$B_PORT --nick bob

TEXT
if [ -n "$balancer" ]; then
  cat <<TEXT
Or through the TCP load balancer (haproxy), which sends each new client
to whichever server has fewer of the clients it sent; TLS goes through
it untouched, end to end:

  ./target/release/chat-client --addr localhost:$DEMO_PORT

TEXT
else
  echo "(With haproxy installed, a TCP load balancer would listen on port $DEMO_PORT.)"
  echo
fi
echo "Servers' logs: $dir/a.log and $dir/b.log. Ctrl-C stops everything."
wait
