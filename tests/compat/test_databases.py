"""agno's RemoteWorkflow.db, RemoteAgent.db and AgentOSClient session and
memory calls cannot tell the gateway from an AgentOS.

Each check makes the same call directly to host a and through the gateway,
and compares. The gateway fronts hosts a (db-a), b (db-b, secured) and c
(db-c), so every call names its database by db_id, as agno's own callers do
against an AgentOS with several databases.
"""

import uuid

import httpx
from agno.agent import RemoteAgent
from agno.client import AgentOSClient
from agno.db.base import SessionType
from agno.workflow import RemoteWorkflow
from conftest import HOST_B_KEY


def dump(items):
    return [item.model_dump() for item in items]


async def test_workflow_db_lists_and_reads_sessions_as_the_host_does(env):
    session = f"db-wf-{uuid.uuid4()}"
    through = RemoteWorkflow(base_url=env.gateway, workflow_id="echo-wf")
    out = await through.arun("hello db", session_id=session, user_id="u-db")
    assert out.content
    direct_db = RemoteWorkflow(base_url=env.host_a, workflow_id="echo-wf").db
    gateway_db = through.db
    assert gateway_db is not None and gateway_db.id == direct_db.id == "db-a"
    assert gateway_db.session_table_name == direct_db.session_table_name

    kwargs = dict(session_type=SessionType.WORKFLOW, component_id="echo-wf", db_id="db-a", user_id="u-db")
    a, b = await direct_db.get_sessions(**kwargs), await gateway_db.get_sessions(**kwargs)
    assert [s.session_id for s in b.data] == [s.session_id for s in a.data]
    assert session in [s.session_id for s in b.data]
    assert b.meta.total_count == a.meta.total_count

    detail = dict(session_type=SessionType.WORKFLOW, db_id="db-a")
    a = await direct_db.get_session(session, **detail)
    b = await gateway_db.get_session(session, **detail)
    assert b.model_dump() == a.model_dump()
    a = await direct_db.get_session_runs(session, **detail)
    b = await gateway_db.get_session_runs(session, **detail)
    assert dump(b) == dump(a) and len(b) == 1


async def test_agent_db_session_runs_and_rename_match(env):
    session = f"db-agent-{uuid.uuid4()}"
    agent = RemoteAgent(base_url=env.gateway, agent_id="echo-agent")
    await agent.arun("remember me", session_id=session, user_id="u-agent", stream=False)
    direct = AgentOSClient(base_url=env.host_a)
    through = AgentOSClient(base_url=env.gateway)
    kwargs = dict(session_type=SessionType.AGENT, db_id="db-a")
    a = await direct.get_session_runs(session, **kwargs)
    b = await through.get_session_runs(session, **kwargs)
    assert dump(b) == dump(a)
    assert b[0].run_input == "remember me"
    renamed = await through.rename_session(session, "renamed", **kwargs)
    assert renamed.session_name == "renamed"
    assert (await direct.get_session(session, **kwargs)).session_name == "renamed"


async def test_memories_round_trip_through_the_gateway(env):
    direct = AgentOSClient(base_url=env.host_a)
    through = AgentOSClient(base_url=env.gateway)
    user = f"u-mem-{uuid.uuid4()}"
    created = await through.create_memory("likes green tea", user_id=user, topics=["drinks"], db_id="db-a")
    listed_direct = await direct.list_memories(user_id=user, db_id="db-a")
    listed_through = await through.list_memories(user_id=user, db_id="db-a")
    assert dump(listed_through.data) == dump(listed_direct.data)
    assert [m.memory_id for m in listed_through.data] == [created.memory_id]
    assert "drinks" in await through.get_memory_topics(db_id="db-a")
    await through.delete_memory(created.memory_id, db_id="db-a")
    assert (await direct.list_memories(user_id=user, db_id="db-a")).data == []


async def test_each_db_id_reaches_its_own_host(env):
    # db-b lives on host b, which needs its key; the caller sends it, as a
    # caller of host b itself would.
    async with httpx.AsyncClient(timeout=30) as http:
        key = {"Authorization": f"Bearer {HOST_B_KEY}"}
        direct = await http.get(f"{env.host_b}/sessions", params={"db_id": "db-b"}, headers=key)
        through = await http.get(f"{env.gateway}/sessions", params={"db_id": "db-b"}, headers=key)
        assert through.status_code == direct.status_code == 200
        assert through.json()["data"] == direct.json()["data"]
        # Host b's own refusal of a wrong key comes back unwrapped.
        wrong = {"Authorization": "Bearer not-the-key"}
        direct = await http.get(f"{env.host_b}/sessions", params={"db_id": "db-b"}, headers=wrong)
        through = await http.get(f"{env.gateway}/sessions", params={"db_id": "db-b"}, headers=wrong)
        assert (through.status_code, through.json()) == (direct.status_code, direct.json())
        assert through.status_code == 401
        # A caller without a key gets the group's auth_token, as host b's
        # workflows do (the operator gave the gateway that key).
        through = await http.get(f"{env.gateway}/sessions", params={"db_id": "db-b"})
        assert through.status_code == 200


async def test_errors_are_agentos_s(env):
    async with httpx.AsyncClient(timeout=30) as http:
        for path, params in (
            ("/sessions", {"db_id": "nope"}),
            ("/memories", {"table": "agno_memories"}),
            ("/metrics", {"db_id": "nope"}),
        ):
            direct = await http.get(f"{env.host_a}{path}", params=params)
            through = await http.get(f"{env.gateway}{path}", params=params)
            assert (through.status_code, through.json()) == (direct.status_code, direct.json()), path
        # Several databases and no db_id: what an AgentOS with several says.
        through = await http.get(f"{env.gateway}/sessions")
        assert (through.status_code, through.json()) == (
            400,
            {"detail": "The db_id query parameter is required when using multiple databases"},
        )


async def test_metrics_and_config_list_the_hosts_databases(env):
    async with httpx.AsyncClient(timeout=30) as http:
        direct = await http.get(f"{env.host_a}/metrics", params={"db_id": "db-a"})
        through = await http.get(f"{env.gateway}/metrics", params={"db_id": "db-a"})
        assert through.status_code == direct.status_code == 200
        assert through.json().keys() == direct.json().keys()
        config = (await http.get(f"{env.gateway}/config")).json()
        assert {"db-a", "db-b"} <= set(config["databases"])
        assert {"db-a", "db-b"} <= {d["db_id"] for d in config["session"]["dbs"]}
