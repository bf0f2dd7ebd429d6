"""A Python SDK (mcp 2.3.0) MCP server for the mcpgw end-to-end tests.

Transports (--transport): streamable-http (the default) on 127.0.0.1:<port>/mcp, dual-era (2026-07-28
stateless requests and legacy initialize sessions); stdio (newline-delimited JSON-RPC on stdin/stdout, no
port); websocket on ws://127.0.0.1:<port>/ws (subprotocol `mcp`, required: a handshake that does not offer
it is refused; one JSON-RPC message per text frame). The SDK has no WebSocket server, so `websocket_app`
is a small adapter between a Starlette WebSocket and the low-level server's memory streams, as the SDK's
stdio transport is. Tools: echo, add, whoami (returns --name, to tell instances apart),
request_header (the value of an HTTP header of the call, e.g. `traceparent`), progress (emits `steps` progress notifications `interval_ms` apart, then returns), slow (runs for
`seconds`, leaving marker files that tell whether it finished, was cancelled, or saw its HTTP client go) and
add_tool (adds a tool at run time and announces it: tools list_changed to listeners and legacy sessions).

Auth mode (--auth-jwks URL --auth-issuer ISS --auth-audience AUD, all three together): every MCP request
needs `Authorization: Bearer <JWT>` signed by a key of the JWKS (RS256/ES256, fetched lazily and refetched
when an unknown kid shows up), with `iss` == ISS, `aud` containing AUD and an unexpired `exp`; otherwise
401 with `WWW-Authenticate: Bearer error="invalid_token", ..., resource_metadata="<PRM URL>"` (the SDK's
auth: PRM at /.well-known/oauth-protected-resource/mcp names ISS as the authorization server). An extra
tool, whoami_token, returns the claims of the bearer token this request carried (aud, iss, sub, scope,
act, ...), so a test sees exactly which token reached the upstream.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import anyio
import jwt
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer


class JwtVerifier:
    """The SDK TokenVerifier for JWT access tokens checked against a JWKS, an issuer and an audience."""

    def __init__(self, jwks_url: str, issuer: str, audience: str) -> None:
        self.jwks = jwt.PyJWKClient(jwks_url, cooldown_duration=0, lifespan=60)
        self.issuer = issuer
        self.audience = audience

    def claims(self, token: str) -> dict[str, Any]:
        key = self.jwks.get_signing_key_from_jwt(token)
        return jwt.decode(
            token,
            key,
            algorithms=["RS256", "ES256"],
            audience=self.audience,
            issuer=self.issuer,
            options={"require": ["exp", "iss", "aud"]},
        )

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = await anyio.to_thread.run_sync(self.claims, token)
        except Exception as exc:  # any failure is an invalid token (401)
            print(f"py_server: bearer token refused: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return None
        scope = claims.get("scope") or claims.get("scp") or ""
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id") or claims.get("azp") or claims.get("sub") or "unknown"),
            scopes=scope.split() if isinstance(scope, str) else list(scope),
            expires_at=int(claims["exp"]),
            resource=self.audience,
            subject=claims.get("sub"),
            claims=claims,
        )


def build(name: str, verifier: JwtVerifier | None = None, auth: AuthSettings | None = None) -> MCPServer:
    server = MCPServer(name=name, token_verifier=verifier, auth=auth)

    if verifier is not None:

        @server.tool(description="The claims of the bearer token this request carried (aud, iss, sub, scope, act...).")
        async def whoami_token(ctx: Context) -> dict[str, Any]:
            request = getattr(ctx.request_context, "request", None)
            header = request.headers.get("authorization", "") if request is not None else ""
            if not header.lower().startswith("bearer "):
                raise ValueError("no bearer token on this request")
            return await anyio.to_thread.run_sync(verifier.claims, header[7:].strip())

    @server.tool(description="Echo the message back.")
    def echo(message: str) -> str:
        return message

    @server.tool(description="Add two numbers.")
    def add(a: float, b: float) -> float:
        return a + b

    @server.tool(description="The value of the HTTP request header `name` this call arrived with ('' when absent).")
    async def request_header(name: str, ctx: Context) -> str:
        request = getattr(ctx.request_context, "request", None)
        return request.headers.get(name, "") if request is not None else ""

    @server.tool(description="Name of this server instance.")
    def whoami() -> str:
        return name

    @server.tool(description="Add a tool `tool_name` that returns `text`, and announce the change (tools list_changed).")
    async def add_tool(tool_name: str, text: str, ctx: Context) -> str:
        def added() -> str:
            return text

        server.add_tool(added, name=tool_name, description=f"Added at run time; returns {text!r}.")
        await ctx.notify_tools_changed()
        try:
            # Legacy sessions hear it on their GET stream.
            await ctx.request_context.session.send_tool_list_changed()
        except Exception:  # noqa: BLE001 - a 2026-07-28 request has no session stream to send on
            pass
        return f"added {tool_name}"

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


def websocket_app(server: MCPServer) -> Any:
    """A Starlette app serving `server` over WebSocket at /ws (subprotocol `mcp`)."""
    import mcp_types as types
    from mcp.shared._context_streams import create_context_streams
    from mcp.shared.message import SessionMessage
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    lowlevel = server._lowlevel_server

    async def endpoint(websocket: WebSocket) -> None:
        if "mcp" not in websocket.scope.get("subprotocols", []):
            await websocket.close(code=1002)  # before accept: the handshake is refused (HTTP 403)
            return
        await websocket.accept(subprotocol="mcp")
        read_writer, read_stream = create_context_streams[SessionMessage | Exception](0)
        write_stream, write_reader = create_context_streams[SessionMessage](0)

        async def frames_in() -> None:
            async with read_writer:
                while True:
                    frame = await websocket.receive()
                    if frame["type"] == "websocket.disconnect":
                        return
                    text = frame.get("text")
                    if text is None:
                        text = (frame.get("bytes") or b"").decode("utf-8", errors="replace")
                    try:
                        message = types.jsonrpc_message_adapter.validate_json(text, by_name=False)
                    except Exception as exc:  # noqa: BLE001 - reported to the server loop, as stdio does
                        await read_writer.send(exc)
                        continue
                    await read_writer.send(SessionMessage(message))

        async def frames_out() -> None:
            async with write_reader:
                async for session_message in write_reader:
                    json = session_message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await websocket.send_text(json)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(frames_in)
                tg.start_soon(frames_out)
                await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
                tg.cancel_scope.cancel()
        except Exception as exc:  # noqa: BLE001 - the client went away mid-message
            print(f"py_server: websocket session ended: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--transport",
        choices=["streamable-http", "stdio", "websocket"],
        default="streamable-http",
        help="streamable-http on /mcp (default), stdio, or websocket on /ws",
    )
    parser.add_argument("--port", type=int, help="the port (streamable-http and websocket)")
    parser.add_argument("--name", default="py-server")
    parser.add_argument("--stateless", action="store_true", help="stateless_http=True (no legacy sessions)")
    parser.add_argument("--json-response", action="store_true", help="answer requests with application/json")
    parser.add_argument("--auth-jwks", metavar="URL", help="require bearer JWTs signed by a key of this JWKS")
    parser.add_argument("--auth-issuer", metavar="ISS", help="the exact `iss` required (auth mode)")
    parser.add_argument("--auth-audience", metavar="AUD", help="a value `aud` must contain (auth mode)")
    args = parser.parse_args()
    if args.transport == "stdio":
        build(args.name).run("stdio")
        return
    if args.port is None:
        parser.error(f"--port is required with --transport {args.transport}")
    if args.transport == "websocket":
        import uvicorn

        uvicorn.run(websocket_app(build(args.name)), host="127.0.0.1", port=args.port, log_level="warning")
        return
    auth_flags = (args.auth_jwks, args.auth_issuer, args.auth_audience)
    verifier = auth = None
    if any(auth_flags):
        if not all(auth_flags):
            parser.error("--auth-jwks, --auth-issuer and --auth-audience go together")
        verifier = JwtVerifier(args.auth_jwks, args.auth_issuer, args.auth_audience)
        auth = AuthSettings(
            issuer_url=args.auth_issuer,
            resource_server_url=f"http://127.0.0.1:{args.port}/mcp",
            validate_token_resource=False,  # the verifier checks `aud` itself
        )
    build(args.name, verifier, auth).run(
        "streamable-http",
        host="127.0.0.1",
        port=args.port,
        streamable_http_path="/mcp",
        stateless_http=args.stateless,
        json_response=args.json_response,
    )


if __name__ == "__main__":
    main()
