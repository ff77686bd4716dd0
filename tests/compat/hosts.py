"""A real agno AgentOS host for the compatibility suite.

    python hosts.py --port P --name a --db-dir DIR     (OS_SECURITY_KEY in the environment secures it;
                                                        JWT_SECRET turns on JWT and scope RBAC)

Its workflows need no model and no network: every step is a plain Python
function. Its agents and teams run on fake_model's deterministic models.
- echo-wf     echoes its input
- slow-wf     streams SLOW_EVENTS progress events (default 40), 50 ms apart
- fail-wf     raises in its step (no retries, not skipped: the run fails)
- inspect-wf  reports the session_id, user_id, session_state, additional_data
              and media it received
- hitl-wf     pauses for a human confirmation, then echoes
- shared-wf   says which host ran it (the same id on every host)
- echo-agent  answers "echo: <message>"
- slow-agent  streams SLOW_EVENTS content chunks, 50 ms apart, then answers
- hitl-agent  calls a tool that needs confirmation (the run pauses), then
              answers with the tool's result
- echo-team   a team (member: echo-agent) whose leader answers "echo: ..."
- slow-team   a team whose leader streams like slow-agent
- hitl-team   a team whose leader calls a tool that needs confirmation
"""

import argparse
import asyncio
import json
import os

import uvicorn
from agno.agent import Agent
from agno.db.sqlite import SqliteDb
from agno.os import AgentOS
from agno.team import Team
from agno.tools import tool
from agno.workflow import Workflow
from agno.workflow.step import Step
from agno.workflow.types import HumanReview, OnError, StepInput, StepOutput, StepProgress
from fake_model import EchoModel, ToolCallingModel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--db-dir", required=True)
    args = parser.parse_args()
    host = args.name
    db = SqliteDb(db_file=os.path.join(args.db_dir, f"host-{host}.db"), id=f"db-{host}")
    slow_events = int(os.environ.get("SLOW_EVENTS", "40"))

    def echo(step_input: StepInput) -> StepOutput:
        return StepOutput(content=f"echo: {step_input.input}")

    async def slow(step_input: StepInput):
        for i in range(slow_events):
            await asyncio.sleep(0.05)
            yield StepProgress(content=f"chunk {i}")
        yield StepOutput(content=f"told {slow_events} chunks")

    def fail(step_input: StepInput) -> StepOutput:
        raise RuntimeError("boom from fail-wf")

    def inspect(step_input: StepInput, run_context) -> StepOutput:
        report = {
            "session_id": run_context.session_id,
            "user_id": run_context.user_id,
            "session_state": run_context.session_state,
            "additional_data": step_input.additional_data,
            "images": [i.url for i in step_input.images or []],
            "files": len(step_input.files or []),
        }
        return StepOutput(content=json.dumps(report, sort_keys=True))

    def shared(step_input: StepInput) -> StepOutput:
        return StepOutput(content=f"ran on host {host}")

    def workflow(wid: str, name: str, step: Step) -> Workflow:
        return Workflow(id=wid, name=name, description=f"{name} on host {host}", db=db, steps=[step])

    workflows = [
        workflow("echo-wf", "Echo Workflow", Step(name="echo", executor=echo)),
        workflow("slow-wf", "Slow Workflow", Step(name="slow", executor=slow)),
        workflow("fail-wf", "Failing Workflow", Step(name="fail", executor=fail, max_retries=0, human_review=HumanReview(on_error=OnError.fail))),
        workflow("inspect-wf", "Inspect Workflow", Step(name="inspect", executor=inspect)),
        workflow(
            "hitl-wf",
            "HITL Workflow",
            Step(name="approve", executor=echo, human_review=HumanReview(requires_confirmation=True)),
        ),
        workflow("shared-wf", "Shared Workflow", Step(name="shared", executor=shared)),
    ]

    @tool(requires_confirmation=True)
    def approve(what: str) -> str:
        """Approve something."""
        return f"approved {what}"

    def agent(aid: str, name: str, **kwargs) -> Agent:
        return Agent(id=aid, name=name, description=f"{name} on host {host}", db=db, **kwargs)

    echo_agent = agent("echo-agent", "Echo Agent", model=EchoModel())
    agents = [
        echo_agent,
        agent("slow-agent", "Slow Agent", model=EchoModel(words=slow_events)),
        agent("hitl-agent", "HITL Agent", model=ToolCallingModel(), tools=[approve]),
    ]
    teams = [
        Team(id="echo-team", name="Echo Team", description=f"Echo Team on host {host}", model=EchoModel(), members=[echo_agent], db=db),
        Team(id="slow-team", name="Slow Team", model=EchoModel(words=slow_events), members=[echo_agent], db=db),
        Team(id="hitl-team", name="HITL Team", model=ToolCallingModel(), members=[echo_agent], tools=[approve], db=db),
    ]
    # JWT_SECRET in the environment: JWT-protected with scope RBAC (HS256,
    # audience = the os id), as tests/compat/test_auth_compat.py compares.
    auth = {}
    if os.environ.get("JWT_SECRET"):
        from agno.os.config import AuthorizationConfig

        auth = dict(
            authorization=True,
            authorization_config=AuthorizationConfig(
                verification_keys=[os.environ["JWT_SECRET"]], algorithm="HS256", verify_audience=True
            ),
        )
    agent_os = AgentOS(
        id=f"host-{host}",
        description=f"compat host {host}",
        agents=agents,
        teams=teams,
        workflows=workflows,
        **auth,
    )
    uvicorn.run(agent_os.get_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
