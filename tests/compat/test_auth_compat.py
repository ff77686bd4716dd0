"""The gateway's edge auth answers as a JWT-protected AgentOS does.

A real AgentOS with `authorization=True` (HS256, audience = its id) and the
gateway, with the same `[auth.jwt]`, in front of an open host: the same
token on the same route gets the same status and `detail` from both, row by
row; listings show the same ids.
"""

import base64
import json
import os
import sys
import tempfile
import time
import pathlib

import httpx
import jwt
import pytest

from conftest import REPO, Processes, free_port, wait_ready

SECRET = "compat-jwt-secret-0123456789abcdef"
AUDIENCE = "host-j"


@pytest.fixture(scope="module")
def pair():
    processes = Processes()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="agw-auth-compat-"))
    try:
        ports = {name: free_port() for name in ("j", "o", "gw", "admin")}
        urls = {}
        for name, extra in (("j", {"JWT_SECRET": SECRET}), ("o", {})):
            proc = processes.start(
                [sys.executable, "hosts.py", "--port", str(ports[name]), "--name", name, "--db-dir", str(tmp)],
                env=extra,
                log=open(tmp / f"host-{name}.log", "w"),
            )
            urls[name] = f"http://127.0.0.1:{ports[name]}"
            wait_ready(f"{urls[name]}/health", proc, f"host {name}")
        workflows = "".join(
            f'[[workflows]]\nid = "{wid}"\nbase_url = "{urls["o"]}"\n\n' for wid in ("echo-wf", "slow-wf", "fail-wf", "inspect-wf", "hitl-wf", "shared-wf")
        )
        toml = f"""
[server]
listen = "127.0.0.1:{ports['gw']}"
os_id = "{AUDIENCE}"

[auth.jwt]
algorithm = "HS256"
verification_keys = ["${{JWT_SECRET}}"]
verify_audience = true
authorization = true

{workflows}"""
        (tmp / "gateway.toml").write_text(toml)
        binary = os.environ.get("AGENTOS_GATEWAY_BIN", str(REPO / "target" / "release" / "agentos-gateway"))
        gw = processes.start(
            [binary, "--config", str(tmp / "gateway.toml")],
            env={
                "JWT_SECRET": SECRET,
                "RUST_LOG": "info",
                "AGENTOS_GATEWAY_ADMIN_LISTEN": f"127.0.0.1:{ports['admin']}",
            },
            log=open(tmp / "gateway.log", "w"),
        )
        gateway = f"http://127.0.0.1:{ports['gw']}"
        wait_ready(f"{gateway}/ready", gw, "gateway")
        yield urls["j"], gateway
    finally:
        processes.stop_all()


def token(scopes=("agent_os:admin",), secret=SECRET, **claims):
    body = {"sub": "alice", "aud": AUDIENCE, "exp": int(time.time()) + 600, "scopes": list(scopes)}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, secret, algorithm="HS256")


def none_alg():
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc({'sub': 'alice', 'aud': AUDIENCE})}."


CREDENTIALS = {
    "missing": None,
    "garbage": "Bearer not-a-jwt",
    "bare": token(),
    "expired": "Bearer " + token(exp=int(time.time()) - 600),
    "not yet valid": "Bearer " + token(nbf=int(time.time()) + 600),
    "wrong signature": "Bearer " + token(secret="another-secret-0123456789abcdef0"),
    "wrong audience": "Bearer " + token(aud="another-os"),
    "no audience": "Bearer " + token(aud=None),
    "none algorithm": "Bearer " + none_alg(),
    "reserved subject": "Bearer " + token(sub="sa:robot"),
    "no scopes": "Bearer " + token(scopes=()),
    "workflow read": "Bearer " + token(scopes=("workflows:read",)),
    "one workflow read": "Bearer " + token(scopes=("workflows:echo-wf:read",)),
    "one workflow run": "Bearer " + token(scopes=("workflows:echo-wf:run",)),
    "any workflow run": "Bearer " + token(scopes=("workflows:*:run",)),
    "config read": "Bearer " + token(scopes=("config:read",)),
    "sessions read": "Bearer " + token(scopes=("sessions:read",)),
    "admin": "Bearer " + token(),
}

ROUTES = [
    ("GET", "/workflows", None),
    ("GET", "/workflows/echo-wf", None),
    ("POST", "/workflows/echo-wf/runs", {"message": "hi", "stream": "false"}),
    ("POST", "/workflows/inspect-wf/runs", {"message": "hi", "stream": "false"}),
    ("GET", "/config", None),
    ("GET", "/sessions", None),
    ("GET", "/health", None),
]


def call(base, method, path, form, credential):
    headers = {"Authorization": credential} if credential else {}
    return httpx.request(method, base + path, data=form, headers=headers, timeout=30)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r[0]} {r[1]}")
@pytest.mark.parametrize("who", list(CREDENTIALS))
def test_same_answer_as_a_jwt_protected_agentos(pair, route, who):
    agentos, gateway = pair
    method, path, form = route
    direct = call(agentos, method, path, form, CREDENTIALS[who])
    through = call(gateway, method, path, form, CREDENTIALS[who])
    refused = {401, 403}
    if direct.status_code in refused:
        assert (through.status_code, through.json()) == (direct.status_code, direct.json())
        return
    assert through.status_code not in refused, through.text
    if path == "/workflows":
        ids = lambda r: sorted(w["id"] for w in r.json())
        assert ids(through) == ids(direct)


def test_the_open_host_sees_the_verified_user(pair):
    agentos, gateway = pair
    form = {"message": "hi", "stream": "false", "user_id": "mallory"}
    report = lambda r: json.loads(r.json()["content"])["user_id"]
    credential = "Bearer " + token(sub="alice")
    direct = call(agentos, "POST", "/workflows/inspect-wf/runs", form, credential)
    through = call(gateway, "POST", "/workflows/inspect-wf/runs", form, credential)
    assert report(direct) == report(through) == "alice"
