"""A Python SDK (mcp 2.3.0) MCP server for the mcpgw end-to-end tests.

Streamable HTTP on 127.0.0.1:<port>/mcp, dual-era (2026-07-28 stateless requests and legacy
initialize sessions). Tools: echo, add, whoami (returns --name, to tell instances apart),
progress (emits `steps` progress notifications `interval_ms` apart, then returns), slow (runs for
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="py-server")
    parser.add_argument("--stateless", action="store_true", help="stateless_http=True (no legacy sessions)")
    parser.add_argument("--json-response", action="store_true", help="answer requests with application/json")
    parser.add_argument("--auth-jwks", metavar="URL", help="require bearer JWTs signed by a key of this JWKS")
    parser.add_argument("--auth-issuer", metavar="ISS", help="the exact `iss` required (auth mode)")
    parser.add_argument("--auth-audience", metavar="AUD", help="a value `aud` must contain (auth mode)")
    args = parser.parse_args()
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
