"""Deterministic agno models for the compatibility suite: no network, no keys.

agno ships no test model, so these subclass agno's own `Model` and answer
from the messages they are given, through agno's real agent and team
machinery (events, storage, cancel, human-in-the-loop).
- EchoModel          answers "echo: <last user message>", after `words`
                     streamed "w<i> " chunks 50 ms apart (0 by default)
- ToolCallingModel   calls the first tool it is given once, then answers
                     "tool said: <the tool's result>"
"""

import asyncio
import json
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator

from agno.models.base import Model
from agno.models.response import ModelResponse


@dataclass
class EchoModel(Model):
    id: str = "echo-model"
    name: str = "EchoModel"
    provider: str = "Fake"
    words: int = 0

    def _reply(self, messages) -> str:
        for message in reversed(messages or []):
            if message.role == "user":
                return f"echo: {message.content}"
        return "echo"

    def invoke(self, *args, messages=None, **kwargs) -> ModelResponse:
        return ModelResponse(role="assistant", content=self._reply(messages))

    async def ainvoke(self, *args, messages=None, **kwargs) -> ModelResponse:
        return ModelResponse(role="assistant", content=self._reply(messages))

    def invoke_stream(self, *args, messages=None, **kwargs) -> Iterator[ModelResponse]:
        yield ModelResponse(role="assistant", content=self._reply(messages))

    async def ainvoke_stream(self, *args, messages=None, **kwargs) -> AsyncIterator[ModelResponse]:
        for i in range(self.words):
            await asyncio.sleep(0.05)
            yield ModelResponse(role="assistant", content=f"w{i} ")
        yield ModelResponse(role="assistant", content=self._reply(messages))

    def _parse_provider_response(self, response: Any, **kwargs) -> ModelResponse:
        return response

    def _parse_provider_response_delta(self, response: Any) -> ModelResponse:
        return response


@dataclass
class ToolCallingModel(EchoModel):
    id: str = "tool-model"

    def _respond(self, messages, tools) -> ModelResponse:
        results = [m for m in messages or [] if m.role == "tool"]
        if results:
            return ModelResponse(role="assistant", content=f"tool said: {results[-1].content}")
        name = tools[0]["function"]["name"] if tools else "none"
        call = {"id": "call-1", "type": "function", "function": {"name": name, "arguments": json.dumps({"what": "it"})}}
        return ModelResponse(role="assistant", tool_calls=[call])

    def invoke(self, *args, messages=None, tools=None, **kwargs) -> ModelResponse:
        return self._respond(messages, tools)

    async def ainvoke(self, *args, messages=None, tools=None, **kwargs) -> ModelResponse:
        return self._respond(messages, tools)

    def invoke_stream(self, *args, messages=None, tools=None, **kwargs) -> Iterator[ModelResponse]:
        yield self._respond(messages, tools)

    async def ainvoke_stream(self, *args, messages=None, tools=None, **kwargs) -> AsyncIterator[ModelResponse]:
        yield self._respond(messages, tools)
