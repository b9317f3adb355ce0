#!/usr/bin/env python3
"""Redis' CPU around one run of bench/cluster.sh, told apart from the set-up.

  redis-sample.py watch PORT PID INTERVAL FILE   sample until SIGTERM
  redis-sample.py figures FILE FROM TO           key=value figures of FILE

`watch` samples an idle Redis for IDLE_S seconds (0.5), then creates
FILE.ready (the run starts when it exists) and goes on until SIGTERM. It
writes one line per sample, `phase seconds cpu_ns seq` (phase `idle` or
`run`): the monotonic
clock, Redis' time on CPU summed over its threads (/proc/PID/task/*/
schedstat, nanoseconds, not the 10 ms ticks of /proc/PID/stat) and the
number of the room's last line (`GET room:{#lobby}:seq`; chat-bench's
clients stay in the lobby). One GET per sample is all it asks of Redis.

`figures` splits the samples by that number, which counts the clients'
join and leave notices as well as their lines: until it passes FROM (the
joins) is the set-up (connections, names claimed, subscriptions, the
joins), from the first sample that sees it past FROM to the first that
sees it at TO (the last line sent) is the steady state, what follows is
the tear-down. The idle samples are the baseline
(Redis' own timers and these GETs), in the figures but not taken off.
"""

import glob
import os
import signal
import socket
import sys
import time

SEQ_KEY = "room:{#lobby}:seq"
IDLE_S = 0.5


def redis_cpu_ns(pid):
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended between the glob and the read
    return total


class Redis:
    """One connection that sends GET and reads its reply (RESP2)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        key = SEQ_KEY.encode()
        self.request = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n", 1)
        return head

    def seq(self):
        self.sock.sendall(self.request)
        head = self.line()
        if head == b"$-1":
            return 0
        if not head.startswith(b"$"):
            raise ConnectionError(f"unexpected reply {head!r}")
        return int(self.line())


def watch(port, pid, interval, out_path):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    redis = Redis(port)
    phase, ready_at = "idle", time.monotonic() + IDLE_S
    with open(out_path, "w") as out:
        while True:
            # The clock and the CPU first, the GET after: the GET's own
            # cost then falls in the next interval, spread evenly.
            now = time.monotonic()
            cpu = redis_cpu_ns(pid)
            out.write(f"{phase} {now:.6f} {cpu} {redis.seq()}\n")
            out.flush()
            if stop:
                return
            if phase == "idle" and now >= ready_at:
                phase = "run"
                open(out_path + ".ready", "w").close()
            time.sleep(interval)


def figures(path, first, last):
    idle, samples = [], []
    with open(path) as f:
        for line in f:
            phase, t, cpu, seq = line.split()
            (idle if phase == "idle" else samples).append((float(t), int(cpu), int(seq)))
    if len(samples) < 2:
        return "redis_samples=%d" % len(samples)
    # The last idle sample is where the run begins.
    t0, cpu0, _ = idle[-1] if idle else samples[0]
    samples.insert(0, (t0, cpu0, 0))
    t_end, cpu_end, final = samples[-1]
    fields = [
        f"redis_samples={len(samples)}",
        f"redis_lines={final}",
        f"redis_cpu_ms={(cpu_end - cpu0) / 1e6:.1f}",
    ]
    if len(idle) >= 2 and idle[-1][0] > idle[0][0]:
        rate = (idle[-1][1] - idle[0][1]) / 1e6 / (idle[-1][0] - idle[0][0])
        fields.append(f"redis_idle_ms_per_s={rate:.2f}")
    moved = next((i for i, s in enumerate(samples) if s[2] > first), None)
    done = next((i for i, s in enumerate(samples) if s[2] >= last), None)
    if moved is None or done is None:
        return " ".join(fields + ["redis_steady=na"])
    # Up to the start of the steady state, the interval in which the
    # number passed the joins included.
    fields.append(f"redis_setup_ms={(samples[moved][1] - cpu0) / 1e6:.1f}")
    # With every line in one interval there is no steady part to tell
    # apart: the interval that holds them is the figure, flagged.
    start = moved if done > moved else moved - 1
    t_a, cpu_a, seq_a = samples[start]
    t_b, cpu_b, seq_b = samples[done]
    lines = seq_b - seq_a
    cpu_ns = cpu_b - cpu_a
    fields += [
        f"redis_steady_s={t_b - t_a:.2f}",
        f"redis_steady_lines={lines}",
        f"redis_steady_cpu_ms={cpu_ns / 1e6:.2f}",
        f"redis_us_per_line={cpu_ns / 1e3 / lines:.2f}" if lines else "redis_us_per_line=na",
        f"redis_lines_per_cpu_s={lines / (cpu_ns / 1e9):.0f}" if cpu_ns else "redis_lines_per_cpu_s=na",
        f"redis_busy_pct={100 * cpu_ns / 1e9 / (t_b - t_a):.1f}" if t_b > t_a else "redis_busy_pct=na",
    ]
    if done == moved:
        fields.append("redis_steady=one_interval")
    return " ".join(fields)


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "watch":
        watch(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
    elif len(sys.argv) == 5 and sys.argv[1] == "figures":
        print(figures(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
