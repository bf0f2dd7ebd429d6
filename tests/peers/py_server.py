"""A Python SDK (mcp 2.3.0) MCP server for the mcpgw end-to-end tests.

Streamable HTTP on 127.0.0.1:<port>/mcp, dual-era (2026-07-28 stateless requests and legacy
initialize sessions). Tools: echo, add, whoami (returns --name, to tell instances apart) and
progress (emits `steps` progress notifications `interval_ms` apart, then returns).
"""

from __future__ import annotations

import argparse

import anyio
from mcp.server.mcpserver import Context, MCPServer


def build(name: str) -> MCPServer:
    server = MCPServer(name=name)

    @server.tool(description="Echo the message back.")
    def echo(message: str) -> str:
        return message

    @server.tool(description="Add two numbers.")
    def add(a: float, b: float) -> float:
        return a + b

    @server.tool(description="Name of this server instance.")
    def whoami() -> str:
        return name

    @server.tool(description="Emit `steps` progress notifications `interval_ms` apart, then return.")
    async def progress(steps: int, interval_ms: int, ctx: Context) -> str:
        for step in range(1, steps + 1):
            await anyio.sleep(interval_ms / 1000)
            await ctx.report_progress(step, steps, f"step {step}/{steps}")
        return f"done {steps}"

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="py-server")
    parser.add_argument("--stateless", action="store_true", help="stateless_http=True (no legacy sessions)")
    parser.add_argument("--json-response", action="store_true", help="answer requests with application/json")
    args = parser.parse_args()
    build(args.name).run(
        "streamable-http",
        host="127.0.0.1",
        port=args.port,
        streamable_http_path="/mcp",
        stateless_http=args.stateless,
        json_response=args.json_response,
    )


if __name__ == "__main__":
    main()
