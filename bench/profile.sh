#!/usr/bin/env bash
# Profiles agentos-gateway for optimisation work (see BENCHMARKS.md). Starts
# bench-host and the gateway, drives it with bench-load, and records one of:
#   bench/profile.sh cpu [connections] [seconds]      -> user and system CPU µs per run request (/proc)
#   bench/profile.sh allocs [seconds]                 -> heap allocations per run request, by call site (valgrind dhat)
#   bench/profile.sh held [streams]                   -> heap bytes held per open idle stream, by call site (valgrind dhat)
#   bench/profile.sh perf [connections] [seconds]     -> target/bench/perf.svg (flamegraph with `cargo install inferno`; a flat profile without)
#   bench/profile.sh callgrind [requests]             -> instructions per request (stable across runs)
#   bench/profile.sh syscalls [connections] [seconds] -> syscalls per request, by call (perf stat; strace -c without perf)
#   bench/profile.sh versus [connections] [pairs]      -> nginx and the gateway in alternating runs: each one's user and
#                                                         system CPU per request, the host's and the client's, and how
#                                                         busy the two cores were
# Builds a release binary with line tables into target/profiling.
# GATEWAY=/path/to/agentos-gateway profiles another build (an older commit
# built in a `git worktree`, say) against the same host and load.
# AUTH=hs256 profiles with `[auth.jwt]` on (HS256, audience, issuer, scope
# RBAC, as the bench's auth workload) and eight tokens taken in turn
# (minted with the .venv's PyJWT).
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
[admin]
listen = ""
[[workflows]]
id = "bench"
base_url = "http://$host"
[[workflows]]
id = "idle"
base_url = "http://$host"
EOF
bearer_args=()
if [ "${AUTH:-}" = hs256 ]; then
  printf '%s\n' '[auth.jwt]' 'algorithm = "HS256"' 'verification_keys = ["profile-secret-of-at-least-32-bytes!"]' \
    'verify_audience = true' 'audience = "profile-os"' 'issuer = "https://idp.profile"' 'authorization = true' \
    >> "$work/gateway.toml"
  .venv/bin/python -c '
import sys, time, jwt
now = int(time.time())
for i in range(8):
    claims = {"sub": f"user-{i}", "aud": "profile-os", "iss": "https://idp.profile",
              "iat": now, "exp": now + 86400, "scopes": ["workflows:run"]}
    print(jwt.encode(claims, "profile-secret-of-at-least-32-bytes!", algorithm="HS256"))
' > "$work/bearers"
  bearer_args=(--bearer-file "$work/bearers")
fi

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
  "$bin/bench-load" --addr "127.0.0.1:$port" runs --connections "$1" --warmup-ms "$2" --duration-ms "$3" "${bearer_args[@]}" > "$work/load.out" &
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
    "$bin/bench-load" --addr "127.0.0.1:$port" runs --connections 4 --warmup-ms 0 --duration-ms 3000 "${bearer_args[@]}" > /dev/null
    callgrind_control -z "$gw_pid" > /dev/null
    "$bin/bench-load" --addr "127.0.0.1:$port" runs --connections 4 --warmup-ms 0 --duration-ms 10000 "${bearer_args[@]}" > "$work/load.out"
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
    if perf stat -e syscalls:sys_enter_writev true > /dev/null 2>&1; then
      # Tracepoint counts: exact, and cheap enough not to change the load.
      events=syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_read,context-switches
      perf stat -x, -e "$events" -p "$gw_pid" -o "$work/stat.txt" -- sleep "$secs"
      wait $load
      python3 - "$work/stat.txt" "$work/load.out" "$secs" <<'PY'
import json, sys
result = json.loads(open(sys.argv[2]).read().split(" ", 1)[1])
served = result["rps"] * float(sys.argv[3])
for line in open(sys.argv[1]):
    fields = line.strip().split(",")
    if len(fields) > 2 and fields[0].replace(".", "").isdigit():
        print(f"{fields[2].split(':')[-1]:28} {float(fields[0]) / served:6.3f} per request")
PY
    else
      timeout "$secs" strace -f -c -p "$gw_pid" -o "$out/strace.txt" || true
      wait $load
      cat "$work/load.out"
      head -30 "$out/strace.txt"
    fi
    ;;
  versus)
    conns=${2:-32}; pairs=${3:-3}; secs=4
    start_gateway "$gateway"
    ngport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$work/nginx"
    # The bench's nginx contender (bench/src/main.rs, nginx_conf).
    cat > "$work/nginx/nginx.conf" <<EOF
daemon off; worker_processes auto; worker_rlimit_nofile 4096; pid $work/nginx/nginx.pid; error_log stderr warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $work/nginx/cb; proxy_temp_path $work/nginx/p;
  fastcgi_temp_path $work/nginx/f; uwsgi_temp_path $work/nginx/u; scgi_temp_path $work/nginx/s;
  keepalive_requests 1000000;
  upstream agentos { server $host; keepalive 1024; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$ngport backlog=4096; location / { proxy_pass http://agentos; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_buffering off; proxy_read_timeout 3600s; } } }
EOF
    nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" 2> "$work/nginx.err" &
    pids+=($!)
    ng_master=$!
    for _ in $(seq 100); do [ -n "$(pgrep -P "$ng_master" | head -1)" ] && break; sleep 0.05; done
    ng_workers=$(pgrep -P "$ng_master" | paste -sd,)
    # User and system ticks of a comma-separated list of processes.
    ticks() { local u=0 s=0 a b p; for p in ${1//,/ }; do read -r a b < <(cpu_ticks "$p"); u=$((u + a)); s=$((s + b)); done; echo "$u $s"; }
    side() { # name port pids
      local t0 t1 h0 h1
      t0=$(ticks "$3"); h0=$(ticks "$host_pid")
      "$bin/bench-load" --addr "127.0.0.1:$2" runs --connections "$conns" --warmup-ms 0 --duration-ms $((secs * 1000)) > "$work/load.out"
      t1=$(ticks "$3"); h1=$(ticks "$host_pid")
      python3 - "$1" "$work/load.out" "$(getconf CLK_TCK)" "$t0" "$t1" "$h0" "$h1" <<'PY'
import json, sys
name, path, hz = sys.argv[1], sys.argv[2], float(sys.argv[3])
(u0, s0), (u1, s1), (hu0, hs0), (hu1, hs1) = ([int(x) for x in a.split()] for a in sys.argv[4:8])
r = json.loads(open(path).read().split(" ", 1)[1])
n, secs = r["requests"], r["seconds"]
per = lambda ticks: ticks / hz * 1e6 / n
host, client = per(hu1 - hu0 + hs1 - hs0), r["cpu"]["client_us"] / n
proxy_u, proxy_s = per(u1 - u0), per(s1 - s0)
busy = (proxy_u + proxy_s + host + client) * n / secs / 1e6 / 2
print(f"{name:16} req/s {r['rps']:7.0f}  proxy user {proxy_u:4.1f} system {proxy_s:4.1f}  host {host:4.1f}  client {client:4.1f} µs/req  cores busy {busy:4.2f}")
PY
    }
    for _ in $(seq "$pairs"); do
      side nginx "$ngport" "$ng_workers"
      side agentos-gateway "$port" "$gw_pid"
    done
    ;;
  *) echo "usage: $0 cpu|allocs|held|perf|callgrind|syscalls|versus" >&2; exit 64 ;;
esac
