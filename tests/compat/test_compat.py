"""agno's own clients cannot tell agentos-gateway from an AgentOS.

Every check makes the same call directly to a real agno AgentOS host and
through the gateway, and compares. Hosts: a (no auth), b (security key),
c (stopped by the last test). See README.md beside this file for the list of
AgentOS behaviours pinned here.
"""

import asyncio
import json
import os
import re

import httpx
import pytest
from agno.client import AgentOSClient
from agno.workflow import RemoteWorkflow

from conftest import HOST_B_KEY, REPO

IDS = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NUMBERS = re.compile(rb'"(created_at|duration|time_to_first_token|updated_at)":[0-9.e-]+')


def normalise(raw: bytes) -> bytes:
    """Raw SSE bytes with the ids and times the host generates replaced."""
    return NUMBERS.sub(rb'"\1":0', IDS.sub(b"ID", raw))


def both(env, workflow_id):
    return (
        RemoteWorkflow(base_url=env.host_a, workflow_id=workflow_id),
        RemoteWorkflow(base_url=env.gateway, workflow_id=workflow_id),
    )


async def raw_stream(url: str, workflow_id: str, data: dict, headers=None) -> bytes:
    async with httpx.AsyncClient(timeout=60) as http:
        async with http.stream("POST", f"{url}/workflows/{workflow_id}/runs", data=data, headers=headers) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            return b"".join([chunk async for chunk in r.aiter_raw()])


async def test_metadata_matches(env):
    direct, gw = both(env, "echo-wf")
    assert gw.id == direct.id == "echo-wf"
    assert gw.name == direct.name == "Echo Workflow"
    assert gw.description == direct.description
    assert gw.db is not None and gw.db.id == direct.db.id == "db-a"
    assert gw.db.session_table_name == direct.db.session_table_name
    assert (await gw.get_workflow_config()).model_dump() == (await direct.get_workflow_config()).model_dump()
    assert (await gw.refresh_config()).model_dump() == (await direct.refresh_config()).model_dump()


async def test_arun_without_stream(env):
    direct, gw = both(env, "echo-wf")
    a, b = await direct.arun("hello"), await gw.arun("hello")
    assert b.content == a.content == "echo: hello"
    assert b.status == a.status == "COMPLETED"
    assert b.run_id and b.run_id != a.run_id and b.session_id


async def test_arun_stream_events_match(env):
    direct, gw = both(env, "echo-wf")
    a = [e async for e in direct.arun("hi", stream=True, stream_events=True)]
    b = [e async for e in gw.arun("hi", stream=True, stream_events=True)]
    assert [e.event for e in b] == [e.event for e in a]
    assert [getattr(e, "content", None) for e in b] == [getattr(e, "content", None) for e in a]
    assert b[-1].event == "WorkflowCompleted" and b[-1].content == "echo: hi"


async def test_raw_sse_bytes_are_identical_but_for_host_ids_and_times(env):
    data = {"message": "bytes", "stream": "true", "session_id": "S-raw", "stream_events": "true"}
    direct = await raw_stream(env.host_a, "slow-wf", data)
    through = await raw_stream(env.gateway, "slow-wf", data)
    assert normalise(through) == normalise(direct)
    assert through.count(b"event: StepProgress") == 40


async def test_a_failing_workflow_fails_the_same_way(env):
    async with httpx.AsyncClient(timeout=60) as http:
        answers = [
            await http.post(f"{url}/workflows/fail-wf/runs", data={"message": "x", "stream": "false"})
            for url in (env.host_a, env.gateway)
        ]
    assert [a.status_code for a in answers] == [500, 500]
    assert answers[1].json() == answers[0].json() == {"detail": "Internal server error (RuntimeError)"}
    direct, gw = both(env, "fail-wf")
    a = [e.event async for e in direct.arun("x", stream=True, stream_events=True)]
    b = [e.event async for e in gw.arun("x", stream=True, stream_events=True)]
    assert b == a and b[-1] == "WorkflowError"


async def test_events_arrive_while_the_run_is_still_running(env):
    """On the first progress event, cancel the run directly on its host. Had
    the gateway held events back until the run ended, the cancel would come
    too late and no WorkflowCancelled could follow."""
    gw = RemoteWorkflow(base_url=env.gateway, workflow_id="slow-wf")
    host = RemoteWorkflow(base_url=env.host_a, workflow_id="slow-wf")
    events = []
    async for event in gw.arun("incremental", stream=True, stream_events=True):
        events.append(event.event)
        if events.count("StepProgress") == 1:
            assert await host.acancel_run(event.run_id) is True
    assert "WorkflowCancelled" in events
    assert events.count("StepProgress") < 40


async def test_session_user_state_and_additional_data_are_forwarded(env):
    direct, gw = both(env, "inspect-wf")
    kwargs = dict(session_id="S-inspect", user_id="U-1", session_state={"k": [1, 2]}, additional_data={"x": "y"})
    a = json.loads((await direct.arun("look", **kwargs)).content)
    b = json.loads((await gw.arun("look", **kwargs)).content)
    assert b == a
    assert b["session_id"] == "S-inspect" and b["user_id"] == "U-1" and b["session_state"]["k"] == [1, 2]


async def test_multipart_with_files_and_images_is_forwarded(env):
    async def post(url):
        files = {"upload": ("notes.txt", b"hello file", "text/plain")}
        data = {
            "message": "media",
            "stream": "false",
            "session_id": "S-media",
            "images": json.dumps([{"url": "https://example.com/cat.png"}]),
        }
        async with httpx.AsyncClient(timeout=60) as http:
            r = await http.post(f"{url}/workflows/inspect-wf/runs", data=data, files=files)
            assert r.status_code == 200, r.text
            return json.loads(r.json()["content"])

    direct, through = await post(env.host_a), await post(env.gateway)
    assert through == direct
    assert through["images"] == ["https://example.com/cat.png"]


async def test_cancel_of_a_running_stream(env):
    gw = RemoteWorkflow(base_url=env.gateway, workflow_id="slow-wf")
    events = []
    async for event in gw.arun("cancel me", stream=True, stream_events=True):
        events.append(event.event)
        if events.count("StepProgress") == 3:
            assert await gw.acancel_run(event.run_id) is True
    assert "WorkflowCancelled" in events
    assert events.count("StepProgress") < 40


async def test_continue_of_a_paused_run(env):
    gw = RemoteWorkflow(base_url=env.gateway, workflow_id="hitl-wf")
    paused = await gw.arun("approve me")
    assert paused.status == "PAUSED"
    requirements = paused.step_requirements
    for requirement in requirements:
        requirement.confirmed = True
    done = await gw.acontinue_run(
        run_id=paused.run_id, session_id=paused.session_id, step_requirements=requirements
    )
    assert done.status == "COMPLETED" and done.content == "echo: approve me"


async def test_resume_of_a_background_stream(env):
    async def resumed(url):
        data = {"message": "resume", "stream": "true", "background": "true", "session_id": "S-resume"}
        async with httpx.AsyncClient(timeout=60) as http:
            async with http.stream("POST", f"{url}/workflows/slow-wf/runs", data=data) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        first = json.loads(line[6:])
                        break
            # Disconnected after the first event; the background run goes on.
            body = {"last_event_index": str(first.get("event_index", 0)), "session_id": "S-resume"}
            async with http.stream("POST", f"{url}/workflows/slow-wf/runs/{first['run_id']}/resume", data=body) as r:
                assert r.status_code == 200
                text = b"".join([c async for c in r.aiter_raw()]).decode()
        return [l[7:] for l in text.splitlines() if l.startswith("event: ")]

    direct, through = await resumed(env.host_a), await resumed(env.gateway)
    assert through[-1] == direct[-1] == "WorkflowCompleted"
    assert "StepProgress" in through


async def test_background_run_polled_to_completion(env):
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.post(
            f"{env.gateway}/workflows/echo-wf/runs",
            data={"message": "later", "stream": "false", "background": "true", "session_id": "S-bg"},
        )
        assert r.status_code == 202
        run_id = r.json()["run_id"]
        for _ in range(600):
            run = await http.get(f"{env.gateway}/workflows/echo-wf/runs/{run_id}", params={"session_id": "S-bg"})
            if run.status_code == 200 and run.json()["status"] == "COMPLETED":
                assert run.json()["content"] == "echo: later"
                return
        pytest.fail("background run never completed")


async def test_unknown_workflow_is_a_404(env):
    async with httpx.AsyncClient(timeout=10) as http:
        for url in (env.host_a, env.gateway):
            r = await http.get(f"{url}/workflows/no-such-wf")
            assert (r.status_code, r.json()) == (404, {"detail": "Workflow not found"})
    with pytest.raises(httpx.HTTPStatusError) as err:
        await RemoteWorkflow(base_url=env.gateway, workflow_id="no-such-wf").arun("x")
    assert err.value.response.status_code == 404


async def test_operator_routes_are_on_the_admin_port_only(env):
    async with httpx.AsyncClient(timeout=10) as http:
        # On the public port the hosts' view is an unknown path, answered as
        # AgentOS answers one.
        direct = await http.get(f"{env.host_a}/gateway/upstreams")
        through = await http.get(f"{env.gateway}/gateway/upstreams")
        assert (through.status_code, through.json()) == (direct.status_code, direct.json())
        assert through.status_code == 404
        # Public `/metrics` is AgentOS's own (a database's metrics), as a host answers it.
        direct = await http.get(f"{env.host_a}/metrics", params={"db_id": "db-a"})
        through = await http.get(f"{env.gateway}/metrics", params={"db_id": "db-a"})
        assert through.status_code == direct.status_code == 200
        assert "# HELP" not in through.text
        # The admin port has both.
        metrics = await http.get(f"{env.admin}/metrics")
        assert metrics.status_code == 200
        assert "agentos_gateway_active_streams " in metrics.text
        upstreams = (await http.get(f"{env.admin}/gateway/upstreams")).json()
        replicas = {r["base_url"] for g in upstreams["host_groups"] for r in g["replicas"]}
        assert {env.host_a, env.host_b, env.host_c} <= replicas


async def test_auth_token_is_forwarded_and_401_passed_back(env):
    # The gateway adds the configured token for shared-b.
    shared_b = await RemoteWorkflow(base_url=env.gateway, workflow_id="shared-b").arun("who")
    assert shared_b.content == "ran on host b"
    shared_a = await RemoteWorkflow(base_url=env.gateway, workflow_id="shared-a").arun("who")
    assert shared_a.content == "ran on host a"
    # secured-echo has no configured token: the caller's is passed through.
    secured = RemoteWorkflow(base_url=env.gateway, workflow_id="secured-echo")
    assert (await secured.arun("x", auth_token=HOST_B_KEY)).content == "echo: x"
    for token, detail in ((None, "Authorization header required"), ("wrong", "Invalid authentication token")):
        with pytest.raises(httpx.HTTPStatusError) as err:
            await secured.arun("x", auth_token=token)
        assert err.value.response.status_code == 401
        assert err.value.response.json() == {"detail": detail}


async def test_agentos_client_config_and_workflow_list(env):
    client = AgentOSClient(base_url=env.gateway)
    config = await client.aget_config()
    assert config.os_id == "compat-gateway"
    ids = {w.id for w in config.workflows}
    assert {"echo-wf", "slow-wf", "shared-a", "shared-b", "doomed-echo"} <= ids
    assert "db-a" in config.databases
    listed = {w.id for w in await client.list_workflows()}
    assert listed == ids


async def test_agno_gateway_in_front_of_ours(env, chained):
    wf = RemoteWorkflow(base_url=chained, workflow_id="echo-wf")
    assert (await wf.arun("chained")).content == "echo: chained"
    slow = RemoteWorkflow(base_url=chained, workflow_id="slow-wf")
    events = [e.event async for e in slow.arun("chained", stream=True, stream_events=True)]
    assert events[0] == "WorkflowStarted" and events[-1] == "WorkflowCompleted"
    assert events.count("StepProgress") == 40


async def python_probe(base_url: str) -> dict:
    """What agno's Python RemoteWorkflow sees for the calls compat_probe makes."""
    echo = RemoteWorkflow(base_url=base_url, workflow_id="echo-wf")
    run = await echo.arun("probe")
    events = [e.event async for e in echo.arun("probe", stream=True, stream_events=True)]
    slow = RemoteWorkflow(base_url=base_url, workflow_id="slow-wf")
    cancel_events, cancelled = [], None
    async for event in slow.arun("probe", stream=True, stream_events=True):
        cancel_events.append(event.event)
        if cancel_events.count("StepProgress") == 3 and cancelled is None:
            cancelled = await slow.acancel_run(event.run_id)
    return {
        "name": echo.name,
        "description": echo.description,
        "db_id": echo.db.id if echo.db else None,
        "run": {"content": run.content, "status": run.status},
        "events": events,
        "cancelled": cancelled,
        "cancel_events": cancel_events,
    }


@pytest.mark.parametrize("target", ["host", "gateway"])
async def test_rust_client_matches_agnos_python_client(env, target):
    base_url = env.host_a if target == "host" else env.gateway
    probe = os.environ.get("AGENTOS_GATEWAY_PROBE", str(REPO / "target" / "release" / "examples" / "compat_probe"))
    proc = await asyncio.create_subprocess_exec(
        probe, base_url, "echo-wf", "slow-wf", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0
    rust = json.loads(out)
    python = await python_probe(base_url)
    # Cancellation is cooperative, so where each run stops may differ by an event.
    for probe_result in (rust, python):
        assert probe_result["cancelled"] is True
        assert "WorkflowCancelled" in probe_result.pop("cancel_events")
    assert rust == python
    assert rust["run"] == {"content": "echo: probe", "status": "COMPLETED"}


async def test_zz_a_stopped_host_fails_fast_and_spares_the_others(env):
    """Runs last: stops host c for good."""
    async with httpx.AsyncClient(timeout=30) as http:
        before = await http.post(f"{env.gateway}/workflows/doomed-echo/runs", data={"message": "x", "stream": "false"})
        assert before.status_code == 200
        env.host_c_proc.kill()
        env.host_c_proc.wait(timeout=10)
        r = await http.post(f"{env.gateway}/workflows/doomed-echo/runs", data={"message": "x", "stream": "false"})
        assert r.status_code in (502, 503), r.text
        assert "detail" in r.json()
        ok = await http.post(f"{env.gateway}/workflows/echo-wf/runs", data={"message": "x", "stream": "false"})
        assert ok.status_code == 200 and ok.json()["content"] == "echo: x"
        listing = await http.get(f"{env.gateway}/workflows")
        assert listing.status_code == 200
        assert "doomed-echo" in {w["id"] for w in listing.json()}
        # Its agent is still listed, and hides no other host's agents or teams.
        listing = await http.get(f"{env.gateway}/agents")
        assert listing.status_code == 200
        listed = {a["id"]: a for a in listing.json()}
        assert {"doomed-agent", "echo-agent", "secured-agent"} <= set(listed)
        assert listed["echo-agent"]["model"]["provider"] == "Fake"
        config = (await http.get(f"{env.gateway}/config")).json()
        assert "doomed-agent" in {a["id"] for a in config["agents"]}
        assert [t["id"] for t in config["teams"]] == ["echo-team", "slow-team", "hitl-team"]
        r = await http.post(f"{env.gateway}/agents/doomed-agent/runs", data={"message": "x", "stream": "false"})
        assert r.status_code in (502, 503) and "agent 'doomed-agent'" in r.json()["detail"]
