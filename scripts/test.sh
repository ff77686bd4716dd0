#!/usr/bin/env bash
# Runs every test: formatting, lints and docs, the Rust unit and integration
# tests (those that start the binary, the adversarial edge suite among them,
# start the optimised build), the offline checks of the Dockerfile and
# Kubernetes manifests, then the compatibility suite (real agno AgentOS hosts
# and agno's own clients against the binary), and a seconds-long smoke of the
# benchmark (it checks that every workload runs without errors, never a
# timing).
#
# Everything is built once, in the `ci` profile (opt-level 1, debug
# assertions on, no LTO): target/ci/. The pinned Python requirements
# go into .venv, installed in the background while Rust builds.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${AGENTOS_GATEWAY_VENV:-.venv}
requirements=(-r deploy/requirements.txt)
[ -f tests/compat/requirements.txt ] && requirements+=(-r tests/compat/requirements.txt)
mkdir -p target
pip_log=target/pip-install.log
echo "== Python: installing the pinned requirements into $venv in the background (log: $pip_log)"
(
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check "${requirements[@]}"
) > "$pip_log" 2>&1 &
pip_pid=$!
python_ready() {
  if ! wait "$pip_pid"; then
    cat "$pip_log"
    echo "error: installing the Python requirements failed (above)" >&2
    exit 1
  fi
}

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo doc (the gateway and the agentos-client crate)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet -p agentos-gateway -p agentos-client
echo "== cargo test (the tests that run the binary, the adversarial suite among them, start target/ci/agentos-gateway)"
bin="$PWD/target/ci/agentos-gateway"
# One selection (the whole workspace, examples and the benchmark included),
# so cargo resolves features once and nothing is compiled twice.
cargo build --profile ci --locked --workspace --bins --examples
AGENTOS_GATEWAY_BIN="$bin" cargo test --profile ci --locked --workspace
python_ready
echo "== Dockerfile and Kubernetes manifests"
"$venv/bin/python" deploy/check.py "$bin"
if [ -d tests/compat ]; then
  echo "== compatibility suite (agno $(grep -i '^agno==' tests/compat/requirements.txt | cut -d= -f3))"
  # The Rust RemoteWorkflow's side of the client-against-client comparison
  # is examples/compat_probe, built above.
  AGENTOS_GATEWAY_BIN="$bin" AGENTOS_GATEWAY_PROBE="$PWD/target/ci/examples/compat_probe" \
    "$venv/bin/python" -m pytest tests/compat -q -rfEs
fi
echo "== benchmark smoke (full run: see BENCHMARKS.md)"
target/ci/bench --smoke --python "$venv/bin/python" --out target/bench-smoke
