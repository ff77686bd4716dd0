#!/usr/bin/env bash
# Profiles agentos-gateway on the non-streaming run path, for optimisation
# work (see BENCHMARKS.md). Starts bench-host and the gateway, drives
# closed-loop runs with bench-load, and records one of:
#   bench/profile.sh perf  [connections] [seconds]  -> target/bench/perf.svg (flamegraph; needs `cargo install inferno`)
#   bench/profile.sh callgrind [requests]          -> instructions per request (stable across runs)
#   bench/profile.sh syscalls [connections] [seconds] -> syscalls per request (strace -c)
# Builds a release binary with line tables into target/profiling.
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
cat > "$work/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
[[workflows]]
id = "bench"
base_url = "http://$host"
EOF

start_gateway() {
  RUST_LOG=warn "$@" --config "$work/gateway.toml" 2> "$work/gateway.err" &
  gw_pid=$!
  pids+=($gw_pid)
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/ready" > /dev/null && return; sleep 0.05; done
  echo "gateway did not start" >&2; cat "$work/gateway.err" >&2; exit 1
}

case $mode in
  perf)
    conns=${2:-32}; secs=${3:-5}
    start_gateway "$bin/agentos-gateway"
    "$bin/bench-load" --addr "127.0.0.1:$port" runs --connections "$conns" --warmup-ms 500 --duration-ms $((secs * 1000 + 1000)) > "$work/load.out" &
    load=$!
    sleep 1
    perf record -F 2999 -g --call-graph dwarf,16384 -o "$work/perf.data" -p "$gw_pid" -- sleep "$secs" 2> /dev/null
    wait $load
    cat "$work/load.out"
    perf script -i "$work/perf.data" 2> /dev/null | inferno-collapse-perf > "$out/perf.folded"
    inferno-flamegraph < "$out/perf.folded" > "$out/perf.svg"
    echo "flamegraph: $out/perf.svg (folded stacks: $out/perf.folded)"
    ;;
  callgrind)
    requests=${2:-2000}
    start_gateway valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "$bin/agentos-gateway"
    # Warm the pools, then count instructions for a fixed number of requests.
    "$bin/bench-load" --addr "127.0.0.1:$port" runs --connections 4 --warmup-ms 0 --duration-ms 3000 > /dev/null
    callgrind_control -z "$gw_pid" > /dev/null
    "$bin/bench-load" --addr "127.0.0.1:$port" runs --connections 4 --warmup-ms 0 --duration-ms 10000 > "$work/load.out"
    callgrind_control -d "$gw_pid" > /dev/null
    sleep 1
    done_requests=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().split(" ",1)[1])["requests"])' "$work/load.out")
    total=$(ls -t "$work"/callgrind.out* | head -1)
    ir=$(callgrind_annotate "$total" 2> /dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
    echo "requests (in window): $done_requests; instructions: $ir; per request: $((ir / done_requests))"
    callgrind_annotate "$total" 2> /dev/null | head -60 > "$out/callgrind.txt"
    echo "top functions: $out/callgrind.txt"
    ;;
  syscalls)
    conns=${2:-32}; secs=${3:-3}
    start_gateway "$bin/agentos-gateway"
    "$bin/bench-load" --addr "127.0.0.1:$port" runs --connections "$conns" --warmup-ms 500 --duration-ms $((secs * 1000)) > "$work/load.out" &
    load=$!
    sleep 0.7
    timeout "$secs" strace -f -c -p "$gw_pid" -o "$out/strace.txt" || true
    wait $load
    cat "$work/load.out"
    head -30 "$out/strace.txt"
    ;;
  *) echo "usage: $0 perf|callgrind|syscalls" >&2; exit 64 ;;
esac
