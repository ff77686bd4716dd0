"""agno's RemoteAgent, RemoteTeam and AgentOSClient cannot tell the gateway
from an AgentOS for agents and teams.

As in test_compat.py, every check makes the same call directly to host a and
through the gateway, and compares. The agents and teams run on fake_model's
deterministic models (see hosts.py).
"""

import json

import httpx
import pytest
from agno.agent import RemoteAgent
from agno.client import AgentOSClient
from agno.team import RemoteTeam

from test_compat import normalise


def agents(env, agent_id):
    return (
        RemoteAgent(base_url=env.host_a, agent_id=agent_id),
        RemoteAgent(base_url=env.gateway, agent_id=agent_id),
    )


def teams(env, team_id):
    return (
        RemoteTeam(base_url=env.host_a, team_id=team_id),
        RemoteTeam(base_url=env.gateway, team_id=team_id),
    )


async def raw_stream(url: str, path: str, data: dict) -> bytes:
    async with httpx.AsyncClient(timeout=60) as http:
        async with http.stream("POST", f"{url}{path}", data=data) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            return b"".join([chunk async for chunk in r.aiter_raw()])


async def test_agent_and_team_metadata_match(env):
    direct, gw = agents(env, "echo-agent")
    assert (await gw.get_agent_config()).model_dump() == (await direct.get_agent_config()).model_dump()
    assert gw.name == direct.name == "Echo Agent"
    assert gw.description == direct.description
    assert gw.db is not None and gw.db.id == direct.db.id == "db-a"
    direct, gw = teams(env, "echo-team")
    assert (await gw.get_team_config()).model_dump() == (await direct.get_team_config()).model_dump()
    assert gw.name == direct.name == "Echo Team"


async def test_agent_and_team_runs_without_stream(env):
    for direct, gw in (agents(env, "echo-agent"), teams(env, "echo-team")):
        a, b = await direct.arun("hello", stream=False), await gw.arun("hello", stream=False)
        assert b.content == a.content == "echo: hello"
        assert b.status == a.status
        assert b.run_id and b.run_id != a.run_id and b.session_id


async def test_agent_and_team_stream_events_match(env):
    for direct, gw in (agents(env, "slow-agent"), teams(env, "slow-team")):
        a = [e async for e in direct.arun("hi", stream=True, stream_events=True)]
        b = [e async for e in gw.arun("hi", stream=True, stream_events=True)]
        assert [e.event for e in b] == [e.event for e in a]
        assert [getattr(e, "content", None) for e in b] == [getattr(e, "content", None) for e in a]
        assert b[-1].event in ("RunCompleted", "TeamRunCompleted")


async def test_raw_agent_and_team_sse_bytes_are_identical_but_for_host_ids_and_times(env):
    # `stream` left out: AgentOS streams agents and teams by default.
    for path in ("/agents/slow-agent/runs", "/teams/slow-team/runs"):
        data = {"message": "bytes", "session_id": f"S-raw{path.replace('/', '-')}", "stream_events": "true"}
        direct = await raw_stream(env.host_a, path, data)
        through = await raw_stream(env.gateway, path, data)
        assert normalise(through) == normalise(direct)
        assert through.count(b"Content\n") >= 40


async def test_cancel_of_a_running_agent_and_team_stream(env):
    for gw, prefix in (
        (RemoteAgent(base_url=env.gateway, agent_id="slow-agent"), ""),
        (RemoteTeam(base_url=env.gateway, team_id="slow-team"), "Team"),
    ):
        events = []
        async for event in gw.arun("cancel me", stream=True, stream_events=True):
            events.append(event.event)
            if events.count(f"{prefix}RunContent") == 3:
                assert await gw.acancel_run(event.run_id) is True
        assert f"{prefix}RunCancelled" in events, events
        assert events.count(f"{prefix}RunContent") < 40


async def test_continue_of_a_paused_agent_run(env):
    """agno's own gateway answers 500 here; the gateway forwards the form."""
    results = []
    for ag in agents(env, "hitl-agent"):
        paused = await ag.arun("approve me", stream=False)
        assert paused.status == "PAUSED"
        for requirement in paused.requirements:
            requirement.confirm()
        done = await ag.acontinue_run(
            run_id=paused.run_id, session_id=paused.session_id, requirements=paused.requirements, stream=False
        )
        results.append((done.status, done.content))
    assert results[1] == results[0] == ("COMPLETED", "tool said: approved it")


async def test_continue_of_a_paused_team_run(env):
    """A team's continue carries `requirements`, forwarded as sent."""
    results = []
    for team in teams(env, "hitl-team"):
        paused = await team.arun("approve me", stream=False)
        assert paused.status == "PAUSED"
        for requirement in paused.requirements:
            requirement.confirm()
        done = await team.acontinue_run(
            run_id=paused.run_id, session_id=paused.session_id, requirements=paused.requirements, stream=False
        )
        results.append((done.status, done.content))
    assert results[1] == results[0] == ("COMPLETED", "tool said: approved it")


async def test_checkpoints_fork_and_compact_are_forwarded(env):
    async with httpx.AsyncClient(timeout=30) as http:
        for path, session in (("/agents/echo-agent", "S-fork-a"), ("/teams/echo-team", "S-fork-t")):
            r = await http.post(f"{env.gateway}{path}/runs", data={"message": "fork", "stream": "false", "session_id": session})
            run_id = r.json()["run_id"]
            checkpoints = [
                await http.get(f"{url}{path}/runs/{run_id}/checkpoints", params={"session_id": session})
                for url in (env.host_a, env.gateway)
            ]
            assert checkpoints[1].status_code == checkpoints[0].status_code
            assert checkpoints[1].json() == checkpoints[0].json()
            snapshot = [
                await http.get(f"{url}{path}/runs/{run_id}/checkpoints/0", params={"session_id": session})
                for url in (env.host_a, env.gateway)
            ]
            assert snapshot[1].status_code == snapshot[0].status_code
            assert normalise(snapshot[1].content) == normalise(snapshot[0].content)
            forked = [await http.post(f"{url}{path}/sessions/{session}/fork") for url in (env.host_a, env.gateway)]
            assert [f.status_code for f in forked] == [200, 200]
            assert forked[1].json()["forked_from_session_id"] == session
            assert forked[1].json()["session_id"] not in (session, forked[0].json()["session_id"])
        compacted = [
            await http.post(f"{url}/agents/echo-agent/sessions/S-fork-a/compact") for url in (env.host_a, env.gateway)
        ]
        assert compacted[1].status_code == compacted[0].status_code
        assert normalise(compacted[1].content) == normalise(compacted[0].content)


async def test_agent_and_team_run_lookups(env):
    """agno's own gateway answers 400 "Run polling is not supported for
    remote agents"; the gateway forwards the look-up to the owning host."""
    async with httpx.AsyncClient(timeout=30) as http:
        # A session belongs to one agent or team: one each.
        for path, session in (("/agents/echo-agent", "S-poll-a"), ("/teams/echo-team", "S-poll-t")):
            r = await http.post(f"{env.gateway}{path}/runs", data={"message": "poll", "stream": "false", "session_id": session})
            assert r.status_code == 200
            run_id = r.json()["run_id"]
            looked_up = [
                await http.get(f"{url}{path}/runs/{run_id}", params={"session_id": session})
                for url in (env.host_a, env.gateway)
            ]
            assert [x.status_code for x in looked_up] == [200, 200]
            assert looked_up[1].json() == looked_up[0].json()
            assert looked_up[1].json()["content"] == "echo: poll"
            listed = [
                await http.get(f"{url}{path}/runs", params={"session_id": session}) for url in (env.host_a, env.gateway)
            ]
            assert listed[1].status_code == listed[0].status_code
            assert listed[1].json() == listed[0].json()


async def test_errors_match_agentos_unwrapped(env):
    async with httpx.AsyncClient(timeout=10) as http:
        message = {"message": "x"}
        for method, path, data in (
            ("GET", "/agents/no-such-agent", None),
            ("POST", "/agents/no-such-agent/runs", message),
            ("GET", "/teams/no-such-team", None),
            ("POST", "/teams/no-such-team/runs/r/cancel", None),
            # Known agent, missing message: the host's 422 body as it is.
            ("POST", "/agents/echo-agent/runs", None),
            # Known agent, unknown run: the host's 404 as it is.
            ("GET", "/agents/echo-agent/runs/no-such-run?session_id=S", None),
            # AgentOS has no compact for teams.
            ("POST", "/teams/echo-team/sessions/S/compact", None),
        ):
            answers = [await http.request(method, f"{url}{path}", data=data) for url in (env.host_a, env.gateway)]
            assert answers[1].status_code == answers[0].status_code, path
            assert answers[1].json() == answers[0].json(), path
            assert answers[1].status_code in (404, 405, 422), path


async def test_agentos_client_lists_agents_and_teams(env):
    client = AgentOSClient(base_url=env.gateway)
    config = await client.aget_config()
    agent_ids = [a.id for a in config.agents]
    assert agent_ids == ["echo-agent", "slow-agent", "hitl-agent", "secured-agent", "doomed-agent"]
    assert [t.id for t in config.teams] == ["echo-team", "slow-team", "hitl-team"]
    # The summaries are the hosts' own, under the gateway's ids.
    direct = await AgentOSClient(base_url=env.host_a).aget_config()
    by_id = {a.id: a for a in direct.agents}
    assert config.agents[0].model_dump() == by_id["echo-agent"].model_dump()
    secured = config.agents[3].model_dump()
    assert secured["name"] == "Echo Agent" and secured["db_id"] == "db-b"
    assert "echo-team" in {w.id for w in config.workflows}
    listed = [a.id for a in await client.list_agents()]
    assert listed == agent_ids
    assert [t.id for t in await client.list_teams()] == ["echo-team", "slow-team", "hitl-team"]
    assert (await client.aget_agent("slow-agent")).name == "Slow Agent"
    assert (await client.aget_team("slow-team")).name == "Slow Team"


async def test_auth_token_serves_a_protected_host_s_agent(env):
    """agno's own gateway dies at start-up when a RemoteAgent's host needs a
    token for /config; the gateway sends the configured auth_token."""
    secured = RemoteAgent(base_url=env.gateway, agent_id="secured-agent")
    config = await secured.get_agent_config()
    assert config.id == "secured-agent" and config.db_id == "db-b"
    assert (await secured.arun("x", stream=False)).content == "echo: x"
    with pytest.raises(httpx.HTTPStatusError) as err:
        await secured.arun("x", stream=False, auth_token="wrong")
    assert err.value.response.status_code == 401
    assert err.value.response.json() == {"detail": "Invalid authentication token"}


async def test_kinds_never_mix(env):
    """Team echo-team and workflow echo-team are different entries."""
    team = await RemoteTeam(base_url=env.gateway, team_id="echo-team").arun("who", stream=False)
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(f"{env.gateway}/workflows/echo-team/runs", data={"message": "who", "stream": "false"})
    assert team.content == "echo: who"
    assert r.status_code == 200 and r.json()["content"] == "ran on host b"
    metrics = httpx.get(f"{env.admin}/metrics").text
    assert 'agentos_gateway_requests_total{kind="team",id="echo-team",route="/teams/{id}/runs",status="200"}' in metrics
    assert 'kind="workflow",id="echo-team",route="/workflows/{id}/runs",status="200"' in metrics
    assert json.loads(httpx.get(f"{env.gateway}/info").text)["agent_count"] == 5
