"""A Python SDK (mcp 2.3.0) MCP server for the mcpgw end-to-end tests.

Streamable HTTP on 127.0.0.1:<port>/mcp, dual-era (2026-07-28 stateless requests and legacy
initialize sessions). Tools: echo, add, whoami (returns --name, to tell instances apart),
progress (emits `steps` progress notifications `interval_ms` apart, then returns) and slow (runs for
`seconds`, leaving marker files that tell whether it finished, was cancelled, or saw its HTTP client go).
"""

from __future__ import annotations

import argparse
from pathlib import Path

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

    @server.tool(
        description="Run for `seconds`. Writes `<marker>.started` at once, `<marker>.disconnected` when the HTTP "
        "connection that carried the request closes, then `<marker>.done` when it completes or "
        "`<marker>.cancelled` when it is cancelled."
    )
    async def slow(seconds: float, marker: str, ctx: Context) -> str:
        base = Path(marker)
        request = getattr(ctx.request_context, "request", None)
        Path(f"{base}.started").write_text(name)
        seen_disconnect = False
        try:
            with anyio.move_on_after(seconds):
                while True:
                    await anyio.sleep(0.05)
                    # Starlette's check never blocks; uvicorn keeps answering http.disconnect once closed.
                    if not seen_disconnect and request is not None and await request.is_disconnected():
                        seen_disconnect = True
                        Path(f"{base}.disconnected").write_text(name)
        except anyio.get_cancelled_exc_class():
            Path(f"{base}.cancelled").write_text(name)
            raise
        Path(f"{base}.done").write_text(name)
        return f"slept {seconds}"

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
