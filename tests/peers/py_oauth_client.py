"""A Python SDK (mcp 2.3.0) MCP client that logs in with the SDK's OAuth client (OAuthClientProvider), no human.

python py_oauth_client.py URL --user NAME [--client-metadata-url URL] [--timeout S] [--scope S] [--mode M]
                          [--wait-expiry] [--dump-tokens FILE] ACTION...
ACTION: tools/list (or list-tools) | call NAME [JSON_ARGS]   (run in order)

The SDK discovers the authorization server itself (401 -> protected resource metadata -> AS metadata ->
dynamic registration, or the client ID metadata document URL when --client-metadata-url is given and the
AS advertises client_id_metadata_document_supported -> authorize with PKCE -> token). The browser part is
oauth_login.browser_login as USER; tokens and the client registration live in memory only.
Registered metadata: client_name "mcpgw e2e python", redirect_uris ["http://127.0.0.1:1/callback"] (never
listened on: the redirect is only captured), grant_types authorization_code + refresh_token, response_types
code, token_endpoint_auth_method none, application_type native.

--scope S          request exactly S (replaces the SDK's own choice: WWW-Authenticate scope, else PRM
                   scopes_supported, else AS scopes_supported, plus offline_access when the AS lists it).
--client-metadata-url  the SDK accepts only https URLs; an http one (loopback tests) is let through by
                   relaxing that SDK check in this process.
--wait-expiry      after the actions, sleep until the access token has expired (its expires_in + 1 s), then
                   run the actions again: the SDK must refresh on its own.
--dump-tokens FILE write {"access_token", "refresh_token", "expires_in", "scope", "client_info"} at the end.

Prints ONE JSON document on stdout:
  {"protocolVersion", "results": [{"round", "action", "tools": [names]} | {"round", "action", "name",
   "result": {"content", "structuredContent", "isError"}}...],
   "tokens": {"access_token_issued": distinct access tokens stored, "refreshed": a token came from a refresh,
              "authorizations": browser logins done},
   "client_id": "..."}
Errors: the same document with "error": "..." on stdout and exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any

import anyio
import mcp.client.auth.oauth2 as sdk_oauth2
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, OAuthFlowError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from oauth_login import browser_login

REDIRECT_URI = "http://127.0.0.1:1/callback"
ACTIONS = ("tools/list", "list-tools", "call")


class MemoryStorage:
    """The SDK's TokenStorage, in memory, counting what it is given."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.tokens_set_at: float | None = None
        self.client_info: OAuthClientInformationFull | None = None
        self.access_tokens: list[str] = []  # every distinct access token, in order
        self.stores = 0

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.tokens_set_at = time.time()
        self.stores += 1
        if tokens.access_token not in self.access_tokens:
            self.access_tokens.append(tokens.access_token)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class Browser:
    """redirect_handler/callback_handler pair: logs in as `user` over HTTP and hands the code to the SDK."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.params: dict[str, str] | None = None
        self.authorizations = 0

    async def redirect(self, authorization_url: str) -> None:
        self.authorizations += 1
        self.params = await browser_login(authorization_url, REDIRECT_URI, self.user)

    async def callback(self) -> AuthorizationCodeResult:
        params, self.params = self.params or {}, None
        if "code" not in params:
            raise OAuthFlowError(
                f"authorization failed: {params.get('error', 'no code')}: {params.get('error_description', '')}"
            )
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))


def parse_actions(tokens: list[str]) -> list[tuple[str, ...]]:
    actions: list[tuple[str, ...]] = []
    i = 0
    while i < len(tokens):
        action = tokens[i]
        if action in ("tools/list", "list-tools"):
            actions.append(("tools/list",))
            i += 1
        elif action == "call" and i + 1 < len(tokens):
            name = tokens[i + 1]
            raw = "{}"
            if i + 2 < len(tokens) and tokens[i + 2] not in ACTIONS:
                raw = tokens[i + 2]
                i += 1
            json.loads(raw)
            actions.append(("call", name, raw))
            i += 2
        else:
            raise SystemExit(f"unknown action {action!r} (tools/list | call NAME [JSON])")
    if not actions:
        raise SystemExit("no action given (tools/list | call NAME [JSON])")
    return actions


def tool_result(result: Any) -> dict[str, Any]:
    return {
        "content": [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content],
        "structuredContent": result.structured_content,
        "isError": bool(result.is_error),
    }


async def run_actions(client: Client, actions: list[tuple[str, ...]], round_: int, out: list[dict[str, Any]]) -> None:
    for action in actions:
        if action[0] == "tools/list":
            names: list[str] = []
            cursor: str | None = None
            while True:
                page = await client.list_tools(cursor=cursor)
                names.extend(tool.name for tool in page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
            out.append({"round": round_, "action": "tools/list", "tools": names})
        else:
            _, name, raw = action
            result = await client.call_tool(name, json.loads(raw))
            out.append({"round": round_, "action": "call", "name": name, "result": tool_result(result)})


def relax_sdk(args: argparse.Namespace) -> None:
    """The two places this test client overrides the SDK, both only on request."""
    if args.client_metadata_url and args.client_metadata_url.startswith("http://"):
        original = sdk_oauth2.is_valid_client_metadata_url
        sdk_oauth2.is_valid_client_metadata_url = lambda url: original(
            "https://" + url.removeprefix("http://") if url else url
        )
    if args.scope is not None:
        sdk_oauth2.get_client_metadata_scopes = lambda *_a, **_k: args.scope


async def run(args: argparse.Namespace, storage: MemoryStorage, browser: Browser, out: dict[str, Any]) -> None:
    actions = parse_actions(args.actions)
    metadata = OAuthClientMetadata(
        client_name="mcpgw e2e python",
        redirect_uris=[REDIRECT_URI],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        application_type="native",
        scope=args.scope,
    )
    provider = OAuthClientProvider(
        server_url=args.url,
        client_metadata=metadata,
        storage=storage,
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
        client_metadata_url=args.client_metadata_url,
    )
    results: list[dict[str, Any]] = out["results"]
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(create_mcp_http_client(auth=provider))
        client = await stack.enter_async_context(
            Client(
                streamable_http_client(args.url, http_client=http),
                mode=args.mode,
                cache=None,
                read_timeout_seconds=args.timeout,
            )
        )
        out["protocolVersion"] = client.protocol_version
        await run_actions(client, actions, 1, results)
        if args.wait_expiry:
            tokens = storage.tokens
            if tokens is None or tokens.expires_in is None or storage.tokens_set_at is None:
                raise RuntimeError("--wait-expiry: the access token has no expires_in")
            await anyio.sleep(max(0.0, storage.tokens_set_at + tokens.expires_in + 1 - time.time()))
            await run_actions(client, actions, 2, results)


def summary(storage: MemoryStorage, browser: Browser, out: dict[str, Any]) -> None:
    out["tokens"] = {
        "access_token_issued": len(storage.access_tokens),
        # every browser login stores one token set; any store beyond those came from a refresh
        "refreshed": storage.stores > browser.authorizations,
        "authorizations": browser.authorizations,
    }
    out["client_id"] = storage.client_info.client_id if storage.client_info else None


def dump_tokens(path: str, storage: MemoryStorage) -> None:
    tokens = storage.tokens
    doc = {
        "access_token": tokens.access_token if tokens else None,
        "refresh_token": tokens.refresh_token if tokens else None,
        "expires_in": tokens.expires_in if tokens else None,
        "scope": tokens.scope if tokens else None,
        "client_info": storage.client_info.model_dump(mode="json", exclude_none=True) if storage.client_info else None,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f)


def describe(exc: BaseException) -> str:
    """Flatten anyio's exception groups so the harness shows the real cause."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the MCP endpoint, e.g. http://127.0.0.1:PORT/mcp/everything")
    parser.add_argument("--user", required=True, help="the login name typed into the IdP's login form")
    parser.add_argument("--client-metadata-url", help="use this client ID metadata document URL (CIMD)")
    parser.add_argument("--timeout", type=float, default=30.0, help="read timeout in seconds")
    parser.add_argument("--scope", help="request exactly this scope")
    parser.add_argument("--mode", default="auto", help="auto | legacy | 2026-07-28")
    parser.add_argument("--wait-expiry", action="store_true", help="run the actions again after token expiry")
    parser.add_argument("--dump-tokens", metavar="FILE", help="write the final tokens and client info here")
    parser.add_argument("actions", nargs="+", help="tools/list | call NAME [JSON]")
    args = parser.parse_args()
    relax_sdk(args)
    storage, browser = MemoryStorage(), Browser(args.user)
    out: dict[str, Any] = {"results": []}
    failed = False
    try:
        anyio.run(run, args, storage, browser, out)
    except BaseException as exc:  # one JSON document even on failure, for the harness to show
        if isinstance(exc, KeyboardInterrupt):
            raise
        out["error"] = describe(exc)
        failed = True
    summary(storage, browser, out)
    if args.dump_tokens:
        dump_tokens(args.dump_tokens, storage)
    print(json.dumps(out))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
