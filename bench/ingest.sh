#!/usr/bin/env bash
# Ingest benchmark: `serve` (ingest only, durable hand-off with publisher confirms) pinned to CPU 0,
# wrk pinned to CPU 1 POSTing distinct, signed, encrypted callbacks. Reports the median of RUNS
# runs: req/s, p50, p99 (and p99.9 per run), RSS idle and peak, non-2xx answers, callbacks per
# hand-off flush; per run also the CPU `serve` and RabbitMQ used, the CPU the hypervisor stole
# (discard runs where it is more than a few per cent) and the share of the time a flush awaited
# its confirm ("confirm wait"; with one flush in flight, the rest is time the broker had nothing
# of ours to confirm).
#
# Each run starts with WARMUP seconds of the same load, not measured. The previous run's callbacks
# are purged from the inbound queues, and RabbitMQ compacts its message store only once new
# messages arrive: that compaction pauses every confirm for 130-250 ms, about 2 s into the load.
# Measured without the warm-up, that pause (the harness's own clean-up) lands in the run and
# reads as a p99 of 100-190 ms.
#
# "machine idle" is the share of both cores nobody used (serve, wrk, RabbitMQ and the rest).
#
# BIN=path measures another build of groupwatch (copy builds aside and interleave their runs: this
# machine's speed drifts by 20% within an hour).
#
#   bench/ingest.sh                      # RUNS=3 DURATION=10 WARMUP=5 CONNS=64 N=300000
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
# Extra GROUPWATCH__… overrides for the server can be passed in the environment.
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-5}
CONNS=${CONNS:-64}
N=${N:-300000}
PORT=18080
OPS_PORT=19464  # http.ops_listen in bench/groupwatch-bench.toml: /readyz and /metrics
EX=${GROUPWATCH__AMQP__EXCHANGE:-gwbench}  # amqp.exchange in bench/groupwatch-bench.toml

bash scripts/services.sh
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
# BIN=path runs another build of groupwatch (to compare two builds in interleaved runs).
if [ -n "${BIN:-}" ]; then
  cargo build --release --locked --example gen_callbacks >&2
else
  cargo build --release --locked --bin groupwatch --example gen_callbacks >&2
  BIN=target/release/groupwatch
fi
REQS=$(mktemp /tmp/gw-callbacks.XXXXXX)
WARM_REQS=$(mktemp /tmp/gw-callbacks.XXXXXX)
trap 'rm -f "$REQS" "$WARM_REQS"; [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null || true' EXIT

purge() { # the intake and every inbound shard, whatever amqp.inbound_shards is
  for q in $(rabbitmqctl -q list_queues name 2>/dev/null | grep -E "^$EX\.(intake|inbound\.[0-9]+)$"); do
    rabbitmqctl -q purge_queue "$q" >/dev/null 2>&1 || true
  done
}
rss_kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
# serve's and the broker's CPU ticks, stolen and total ticks, wall seconds, the hand-off's
# summed confirm time (over 100% when flushes overlap: amqp.handoff_in_flight > 1), and idle ticks.
sample() {
  local serve broker steal total handoff idle
  serve=$(awk '{ print $14 + $15 }' "/proc/$PID/stat")
  broker=$(for p in $(pgrep -f beam.smp); do awk '{ print $14 + $15 }' "/proc/$p/stat"; done | awk '{ t += $1 } END { print t + 0 }')
  read -r steal total idle < <(awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print $9, t, $5 + $6 }' /proc/stat)
  handoff=$(curl -fs "http://127.0.0.1:$OPS_PORT/metrics" | awk '$1 == "groupwatch_handoff_seconds_sum" { print $2 }')
  echo "$serve $broker $steal $total $(date +%s.%N) ${handoff:-0} $idle"
}
to_ms() { # wrk prints 812.00us, 1.23ms or 1.01s
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}

results=()
for run in $(seq "$RUNS"); do
  purge
  taskset -c 0 "$BIN" serve --config bench/groupwatch-bench.toml 2>/tmp/gw-bench-serve.log &
  PID=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null && break; sleep 0.1; done
  sleep 1
  idle=$(rss_kb "$PID" VmRSS)
  # Signed now, so every timestamp is inside the replay window during the run.
  target/release/examples/gen_callbacks "$REQS" "$N" 2>/dev/null
  if [ "$WARMUP" -gt 0 ]; then
    # Distinct from the measured callbacks, so no callback is posted twice.
    target/release/examples/gen_callbacks "$WARM_REQS" "$N" bench "$N" 2>/dev/null
    taskset -c 1 wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s bench/wrk_callbacks.lua \
      "http://127.0.0.1:$PORT" -- "$WARM_REQS" > /dev/null
  fi
  # CPU of serve and of the broker, CPU stolen by the hypervisor, and the time the hand-off had
  # a flush awaiting its confirm, all over the measured run only.
  before=$(sample)
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s bench/wrk_callbacks.lua \
    "http://127.0.0.1:$PORT" -- "$REQS" > /tmp/gw-bench-wrk.txt
  after=$(sample)
  peak=$(rss_kb "$PID" VmHWM)
  usage=$(echo "$before $after" | awk -v hz="$(getconf CLK_TCK)" '{ wall = $12 - $5; ticks = $11 - $4
    printf "serve CPU %d%%  broker CPU %d%%  machine idle %d%%  steal %d%%  confirm wait %d%%",
      100 * ($8 - $1) / (wall * hz), 100 * ($9 - $2) / (wall * hz), 100 * ($14 - $7) / ticks,
      100 * ($10 - $3) / ticks, 100 * ($13 - $6) / wall }')
  batches=$(curl -fs "http://127.0.0.1:$OPS_PORT/metrics" | awk '/^groupwatch_handoff_batch_events_(sum|count)/ { v[$1] = $2 } END { for (k in v) if (k ~ /count/) c = v[k]; else s = v[k]; if (c > 0) printf "%.1f", s / c; else print "?" }')
  kill -TERM "$PID"; wait "$PID" || true; PID=
  rps=$(awk '/^Requests\/sec/ { print $2 }' /tmp/gw-bench-wrk.txt)
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' /tmp/gw-bench-wrk.txt)")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' /tmp/gw-bench-wrk.txt)")
  p999=$(awk '$1 == "latency" && $2 == "p99.9" { print $3 }' /tmp/gw-bench-wrk.txt)
  non2xx=$(awk '/Non-2xx/ { print $NF }' /tmp/gw-bench-wrk.txt); non2xx=${non2xx:-0}
  echo "run $run: ${rps} req/s  p50 ${p50} ms  p99 ${p99} ms  p99.9 ${p999} ms  RSS idle $((idle / 1024)) MB peak $((peak / 1024)) MB  non-2xx ${non2xx}  callbacks/flush ${batches}  ${usage}"
  results+=("$rps $p50 $p99 $idle $peak")
done
purge
# The median of each column on its own (the run with the median rate need not have the median p99).
median() { printf '%s\n' "${results[@]}" | awk -v k="$1" '{ print $k }' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
printf 'median of %d runs: %.0f req/s, p50 %s ms, p99 %s ms, RSS idle %d MB, peak %d MB\n' "$RUNS" \
  "$(median 1)" "$(median 2)" "$(median 3)" "$(( $(median 4) / 1024 ))" "$(( $(median 5) / 1024 ))"
