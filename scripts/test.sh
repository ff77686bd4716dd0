#!/usr/bin/env bash
# Runs every test: formatting, lints and docs, the Rust unit and integration tests
# (those that start the binary, the adversarial edge suite among them,
# start the release build),
# the offline checks of the Dockerfile and Kubernetes manifests, then the
# compatibility suite (real agno AgentOS hosts and agno's own clients
# against the release binary), and a seconds-long smoke of the benchmark
# (it checks that every workload runs without errors, never a timing).
# Creates .venv with the pinned Python requirements on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${AGENTOS_GATEWAY_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
requirements=(-r deploy/requirements.txt)
[ -f tests/compat/requirements.txt ] && requirements+=(-r tests/compat/requirements.txt)
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo doc (the gateway and the agentos-client crate)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet -p agentos-gateway -p agentos-client
echo "== release build"
cargo build --release --locked
echo "== cargo test (tests that run the binary, the adversarial suite among them, run the release build)"
AGENTOS_GATEWAY_BIN="$PWD/target/release/agentos-gateway" cargo test --locked
echo "== Dockerfile and Kubernetes manifests"
"$venv/bin/python" deploy/check.py target/release/agentos-gateway
if [ -d tests/compat ]; then
  echo "== compatibility suite (agno $(grep -i '^agno==' tests/compat/requirements.txt | cut -d= -f3))"
  # The Rust RemoteWorkflow's side of the client-against-client comparison.
  cargo build --release --locked -p agentos-client --example compat_probe
  AGENTOS_GATEWAY_BIN="$PWD/target/release/agentos-gateway" "$venv/bin/python" -m pytest tests/compat -q -rfEs
fi
echo "== benchmark smoke (full run: see BENCHMARKS.md)"
cargo build --release --locked -p agentos-gateway-bench
target/release/bench --smoke --python "$venv/bin/python" --out target/bench-smoke
