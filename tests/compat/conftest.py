"""Fixtures of the compatibility suite: real agno AgentOS hosts, the gateway
binary in front of them, and agno's own gateway chained in front of ours.

Everything listens on 127.0.0.1 ephemeral ports and is killed at the end of
the session, also on failure. Readiness is polled on /health or /ready; no
test sleeps to synchronise.
"""

import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import httpx
import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
HOST_B_KEY = "compat-secret-b"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready at {url} after {timeout}s")


@dataclass
class Processes:
    procs: list = field(default_factory=list)

    def start(self, args, env=None, log=None) -> subprocess.Popen:
        proc = subprocess.Popen(
            args,
            env={**os.environ, **(env or {})},
            stdout=log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            cwd=str(HERE),
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.wait(timeout=10)


@dataclass
class Env:
    host_a: str
    host_b: str
    host_c: str
    gateway: str
    # The gateway's admin listener (/metrics, /gateway/upstreams).
    admin: str
    host_c_proc: subprocess.Popen
    tmp: pathlib.Path
    processes: Processes


@pytest.fixture(scope="session")
def env():
    processes = Processes()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="agw-compat-"))
    try:
        ports = {name: free_port() for name in ("a", "b", "c", "gw", "admin")}
        hosts = {}
        for name in ("a", "b", "c"):
            extra = {"OS_SECURITY_KEY": HOST_B_KEY} if name == "b" else {}
            log = open(tmp / f"host-{name}.log", "w")
            proc = processes.start(
                [sys.executable, "hosts.py", "--port", str(ports[name]), "--name", name, "--db-dir", str(tmp)],
                env=extra,
                log=log,
            )
            hosts[name] = (f"http://127.0.0.1:{ports[name]}", proc)
        for name, (url, proc) in hosts.items():
            wait_ready(f"{url}/health", proc, f"host {name}")

        a, b, c = hosts["a"][0], hosts["b"][0], hosts["c"][0]
        workflows = "".join(
            f'[[workflows]]\nid = "{wid}"\nbase_url = "{a}"\n\n'
            for wid in ("echo-wf", "slow-wf", "fail-wf", "inspect-wf", "hitl-wf")
        )
        agents = "".join(
            f'[[agents]]\nid = "{aid}"\nbase_url = "{a}"\n\n' for aid in ("echo-agent", "slow-agent", "hitl-agent")
        )
        toml = f"""
[server]
listen = "127.0.0.1:{ports['gw']}"
os_id = "compat-gateway"
name = "Compat Gateway"
description = "agentos-gateway under test"
connect_timeout = 2
health_check_interval = 1

{workflows}
[[workflows]]
id = "shared-a"
base_url = "{a}"
workflow_id = "shared-wf"

[[workflows]]
id = "shared-b"
base_url = "{b}"
workflow_id = "shared-wf"
auth_token = "${{HOST_B_KEY}}"

[[workflows]]
id = "secured-echo"
base_url = "{b}"
workflow_id = "echo-wf"

[[workflows]]
id = "doomed-echo"
base_url = "{c}"
workflow_id = "echo-wf"

{agents}
[[agents]]
id = "secured-agent"
base_url = "{b}"
agent_id = "echo-agent"
auth_token = "${{HOST_B_KEY}}"

[[agents]]
id = "doomed-agent"
base_url = "{c}"
agent_id = "echo-agent"

[[teams]]
id = "echo-team"
base_url = "{a}"

[[teams]]
id = "slow-team"
base_url = "{a}"

[[teams]]
id = "hitl-team"
base_url = "{a}"

# The same id as the team on another kind: kinds never mix.
[[workflows]]
id = "echo-team"
base_url = "{b}"
workflow_id = "shared-wf"
auth_token = "${{HOST_B_KEY}}"
"""
        (tmp / "gateway.toml").write_text(toml)
        binary = os.environ.get("AGENTOS_GATEWAY_BIN", str(REPO / "target" / "release" / "agentos-gateway"))
        gw_log = open(tmp / "gateway.log", "w")
        admin_addr = f"127.0.0.1:{ports['admin']}"
        gw = processes.start(
            [binary, "--config", str(tmp / "gateway.toml")],
            # The admin listener on a free port of its own, never the
            # default 9901 (taken by a local gateway or a parallel run).
            env={"HOST_B_KEY": HOST_B_KEY, "RUST_LOG": "info", "AGENTOS_GATEWAY_ADMIN_LISTEN": admin_addr},
            log=gw_log,
        )
        gateway = f"http://127.0.0.1:{ports['gw']}"
        admin = f"http://{admin_addr}"
        wait_ready(f"{gateway}/ready", gw, "gateway")
        wait_ready(f"{admin}/ready", gw, "gateway admin listener")
        yield Env(a, b, c, gateway, admin, hosts["c"][1], tmp, processes)
    finally:
        processes.stop_all()


@pytest.fixture(scope="session")
def chained(env):
    """agno's own AgentOS in gateway mode, with RemoteWorkflows pointing at ours."""
    port = free_port()
    proc = env.processes.start(
        [sys.executable, "chain.py", "--port", str(port), "--upstream", env.gateway],
        log=open(env.tmp / "chain.log", "w"),
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/health", proc, "agno gateway")
    return url
