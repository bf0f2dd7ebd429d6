"""A Python SDK (mcp 2.3.0) MCP client CLI for the mcpgw end-to-end tests.

Prints ONE JSON document on stdout:
  list-tools                 {"protocolVersion", "tools": [{"name", "description", "inputSchema"}...]} (all pages)
  call NAME JSON_ARGS        {"protocolVersion", "result": {"content", "structuredContent", "isError"}}
  progress NAME JSON_ARGS    {"protocolVersion", "progress": [{"t", "progress", "total", "message"}...],
                              "resultAt", "result": {...}}  (t = seconds since the call started, monotonic)
Errors: a JSON document {"error": "..."} on stdout and exit status 1.

--mode: auto (server/discover, falls back to initialize), legacy (initialize handshake) or a modern
version pin such as 2026-07-28 (no probe, per-request _meta).
--header "Name: value" (repeatable): sent with every HTTP request, e.g. "Authorization: Bearer mcpgw_...".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import contextlib

import anyio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def tool_result(result: Any) -> dict[str, Any]:
    return {
        "content": [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content],
        "structuredContent": result.structured_content,
        "isError": bool(result.is_error),
    }


def parse_headers(raw: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in raw:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"--header must be 'Name: value', got {item!r}")
        headers[name.strip()] = value.strip()
    return headers


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        server: Any = args.url
        if args.header:
            http = await stack.enter_async_context(create_mcp_http_client(headers=parse_headers(args.header)))
            server = streamable_http_client(args.url, http_client=http)
        client = await stack.enter_async_context(
            Client(server, mode=args.mode, cache=None, read_timeout_seconds=args.timeout)
        )
        return await act(client, args)


async def act(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"protocolVersion": client.protocol_version}
    if args.action == "list-tools":
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor)
            for tool in page.tools:
                tools.append(
                    {"name": tool.name, "description": tool.description, "inputSchema": tool.input_schema}
                )
            cursor = page.next_cursor
            if not cursor:
                break
        out["tools"] = tools
    elif args.action == "call":
        result = await client.call_tool(args.name, json.loads(args.json_args))
        out["result"] = tool_result(result)
    elif args.action == "progress":
        events: list[dict[str, Any]] = []
        start = time.monotonic()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            events.append(
                {"t": time.monotonic() - start, "progress": progress, "total": total, "message": message}
            )

        result = await client.call_tool(args.name, json.loads(args.json_args), progress_callback=on_progress)
        out["resultAt"] = time.monotonic() - start
        out["progress"] = events
        out["result"] = tool_result(result)
    return out


def describe(exc: BaseException) -> str:
    """Flatten anyio's exception groups so the harness shows the real cause."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--mode", default="auto", help="auto | legacy | 2026-07-28")
    parser.add_argument("--timeout", type=float, default=30.0, help="read timeout in seconds")
    parser.add_argument("--header", action="append", default=[], help="'Name: value' sent with every request")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list-tools")
    for action in ("call", "progress"):
        p = sub.add_parser(action)
        p.add_argument("name")
        p.add_argument("json_args", nargs="?", default="{}")
    args = parser.parse_args()
    try:
        out = anyio.run(run, args)
    except BaseException as exc:  # one JSON document even on failure, for the harness to show
        if isinstance(exc, KeyboardInterrupt):
            raise
        print(json.dumps({"error": describe(exc)}))
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
