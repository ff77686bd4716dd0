"""agno's own AgentOS in gateway mode, in front of agentos-gateway:
AgentOS(workflows=[RemoteWorkflow(base_url=<our gateway>, ...)]).

    python chain.py --port P --upstream http://127.0.0.1:GW
"""

import argparse

import uvicorn
from agno.os import AgentOS
from agno.workflow import RemoteWorkflow


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    workflows = [RemoteWorkflow(base_url=args.upstream, workflow_id=wid) for wid in ("echo-wf", "slow-wf")]
    agent_os = AgentOS(id="agno-gateway", workflows=workflows)
    uvicorn.run(agent_os.get_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
