"""agno's own AgentOS in gateway mode, as a benchmark contender.

One RemoteWorkflow per workflow of the fake host (`bench`, `idle`), served by
uvicorn on 127.0.0.1 with a listen backlog of 4096. Started by the `bench`
orchestrator; needs the packages in bench/requirements.txt (agno pinned).
"""

import argparse
import os

os.environ.setdefault("AGNO_TELEMETRY", "false")

import uvicorn  # noqa: E402
from agno.os import AgentOS  # noqa: E402
from agno.workflow import RemoteWorkflow  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host-url", required=True, help="the fake AgentOS host")
    args = parser.parse_args()
    agent_os = AgentOS(
        id="agno-gateway",
        name="agno gateway (benchmark)",
        workflows=[
            RemoteWorkflow(base_url=args.host_url, workflow_id="bench"),
            RemoteWorkflow(base_url=args.host_url, workflow_id="idle"),
        ],
        telemetry=False,
    )
    app = agent_os.get_app()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        backlog=4096,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
