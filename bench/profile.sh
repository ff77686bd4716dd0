#!/usr/bin/env bash
# Profiles agentos-gateway for optimisation work (see BENCHMARKS.md). Starts
# bench-host and the gateway, drives it with bench-load, and records one of:
#   bench/profile.sh cpu [connections] [seconds]      -> user and system CPU µs per run request (/proc)
#   bench/profile.sh allocs [seconds]                 -> heap allocations per run request, by call site (valgrind dhat)
#   bench/profile.sh held [streams]                   -> heap bytes held per open idle stream, by call site (valgrind dhat)
#   bench/profile.sh perf [connections] [seconds]     -> target/bench/perf.svg (flamegraph with `cargo install inferno`; a flat profile without)
#   bench/profile.sh callgrind [requests]             -> instructions per request (stable across runs)
#   bench/profile.sh syscalls [connections] [seconds] -> syscalls per request (strace -c)
# Builds a release binary with line tables into target/profiling.
# GATEWAY=/path/to/agentos-gateway profiles another build (an older commit
# built in a `git worktree`, say) against the same host and load.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-perf}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/profiling}
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --locked -p agentos-gateway -p agentos-gateway-bench >&2
bin=$CARGO_TARGET_DIR/release
out=target/bench
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

"$bin/bench-host" > "$work/host.out" &
pids+=($!)
host_pid=$!
for _ in $(seq 100); do grep -q LISTEN "$work/host.out" 2>/dev/null && break; sleep 0.05; done
host=$(awk '/LISTEN/ {print $2; exit}' "$work/host.out")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
gateway=${GATEWAY:-$bin/agentos-gateway}
# A short drain, so that SIGTERM ends a profiled gateway (and dhat writes
# its profile) at once.
cat > "$work/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
drain_grace = 0.01
drain_timeout = 1
[[workflows]]
id = "bench"
base_url = "http://$host"
[[workflows]]
id = "idle"
base_url = "http://$host"
EOF

start_gateway() {
  RUST_LOG=warn "$@" --config "$work/gateway.toml" 2> "$work/gateway.err" &
  gw_pid=$!
  pids+=($gw_pid)
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/ready" > /dev/null && return; sleep 0.05; done
  echo "gateway did not start" >&2; cat "$work/gateway.err" >&2; exit 1
}

# Requests in a bench-load RESULT line.
requests_in() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().split(" ",1)[1])["requests"])' "$1"; }
# User and system CPU ticks of a process, all its threads included.
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
# Starts the gateway and closed-loop runs against it in the background
# ($load is their pid), and returns once they are under way.
start_runs() { # connections warm-up-ms duration-ms
  start_gateway "$gateway"
  "$bin/bench-load" --addr "127.0.0.1:$port" runs --connections "$1" --warmup-ms "$2" --duration-ms "$3" > "$work/load.out" &
  load=$!
  sleep 1
}

case $mode in
  cpu)
    conns=${2:-32}; secs=${3:-4}
    start_runs "$conns" 1000 $((secs * 1000))
    read -r u0 s0 < <(cpu_ticks "$gw_pid")
    sleep "$secs"
    read -r u1 s1 < <(cpu_ticks "$gw_pid")
    wait $load
    python3 - "$work/load.out" "$u0" "$s0" "$u1" "$s1" "$(getconf CLK_TCK)" "$secs" <<'PY'
import json, sys
result = json.loads(open(sys.argv[1]).read().split(" ", 1)[1])
u0, s0, u1, s1, hz, secs = map(float, sys.argv[2:])
served = result["rps"] * secs
us = lambda ticks: ticks / hz * 1e6 / served
print(f"req/s {result['rps']:.0f}  user {us(u1 - u0):.1f} µs/req  system {us(s1 - s0):.1f} µs/req  errors {result['errors']}")
PY
    ;;
  allocs)
    secs=${2:-4}
    start_gateway valgrind --tool=dhat --dhat-out-file="$work/dhat.out" "$gateway"
    "$bin/bench-load" --addr "127.0.0.1:$port" runs --connections 4 --warmup-ms 0 --duration-ms $((secs * 1000)) > "$work/load.out"
    kill -TERM "$gw_pid"; wait "$gw_pid" || true
    cp "$work/dhat.out" "$out/dhat-allocs.json"
    python3 bench/dhat_summary.py allocs "$work/dhat.out" "$(requests_in "$work/load.out")"
    ;;
  held)
    streams=${2:-500}
    start_gateway valgrind --tool=dhat --dhat-out-file="$work/dhat.out" "$gateway"
    "$bin/bench-load" --addr "127.0.0.1:$port" idle --streams "$streams" --open-timeout-secs 60 --hold-secs 3 < /dev/null > "$work/load.out"
    kill -TERM "$gw_pid"; wait "$gw_pid" || true
    python3 bench/dhat_summary.py held "$work/dhat.out" "$streams"
    ;;
  perf)
    conns=${2:-32}; secs=${3:-5}
    start_runs "$conns" 500 $((secs * 1000 + 1000))
    perf record -e cpu-clock -F 2999 -g --call-graph dwarf,16384 -o "$work/perf.data" -p "$gw_pid" -- sleep "$secs" 2> /dev/null
    wait $load
    cat "$work/load.out"
    cp "$work/perf.data" "$out/perf.data"
    if command -v inferno-flamegraph > /dev/null; then
      perf script -i "$work/perf.data" 2> /dev/null | inferno-collapse-perf > "$out/perf.folded"
      inferno-flamegraph < "$out/perf.folded" > "$out/perf.svg"
      echo "flamegraph: $out/perf.svg (folded stacks: $out/perf.folded)"
    else
      # No inferno: the flat profile, by binary and symbol.
      perf report -i "$work/perf.data" --no-children --sort dso,symbol --percent-limit 0.7 --stdio -g none 2> /dev/null |
        grep -v '^$' | grep -v '^#' | grep '%' | head -60
      echo "perf data: $out/perf.data (perf report -i $out/perf.data)"
    fi
    ;;
  callgrind)
    requests=${2:-2000}
    start_gateway valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "$gateway"
    # Warm the pools, then count instructions for a fixed number of requests.
    "$bin/bench-load" --addr "127.0.0.1:$port" runs --connections 4 --warmup-ms 0 --duration-ms 3000 > /dev/null
    callgrind_control -z "$gw_pid" > /dev/null
    "$bin/bench-load" --addr "127.0.0.1:$port" runs --connections 4 --warmup-ms 0 --duration-ms 10000 > "$work/load.out"
    callgrind_control -d "$gw_pid" > /dev/null
    sleep 1
    done_requests=$(requests_in "$work/load.out")
    total=$(ls -t "$work"/callgrind.out* | head -1)
    ir=$(callgrind_annotate "$total" 2> /dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
    echo "requests (in window): $done_requests; instructions: $ir; per request: $((ir / done_requests))"
    cp "$total" "$out/callgrind.out"
    callgrind_annotate "$total" 2> /dev/null | head -60 > "$out/callgrind.txt"
    echo "top functions: $out/callgrind.txt"
    ;;
  syscalls)
    conns=${2:-32}; secs=${3:-3}
    start_runs "$conns" 500 $((secs * 1000 + 1000))
    timeout "$secs" strace -f -c -p "$gw_pid" -o "$out/strace.txt" || true
    wait $load
    cat "$work/load.out"
    head -30 "$out/strace.txt"
    ;;
  *) echo "usage: $0 cpu|allocs|held|perf|callgrind|syscalls" >&2; exit 64 ;;
esac
