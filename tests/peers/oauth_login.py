"""The browser part of an OAuth authorization code flow, driven over plain HTTP (no human, no browser).

python oauth_login.py AUTH_URL REDIRECT_URI USER [--stop-at URL_PREFIX]
  Prints ONE JSON document on stdout. Exit status 0: the query parameters of the redirect to REDIRECT_URI
  that ended the flow ({"code", "state", "iss"}, or an OAuth error response {"error", "error_description",
  "state", ...}). Exit status 1: the flow broke off before reaching REDIRECT_URI: {"error": "...",
  "trace": ["METHOD url -> status", ...]}.

--stop-at: stop at the first page (200) whose URL starts with URL_PREFIX, without submitting it, and print
{"stopped_at": url, "cookies": {name: value}, "action": form action, "fields": {hidden inputs}} (exit 0):
the tests forge or replay that form themselves.

As a module: `await browser_login(authorization_url, redirect_uri, user)` returns the same dict (first
value of each parameter) and raises `LoginError` (with the hop trace) otherwise.

The steps: GET the authorization URL with a fresh cookie jar and no automatic redirects. A 3xx is followed
(Location resolved against the current URL) until a Location starts with REDIRECT_URI, which is not
requested: its query is the result. A 200 page must hold a <form>: the first one is submitted (its method,
default GET; its action resolved against the page URL, default the page itself) with every hidden input,
`login=USER` when the form has an input named login, and `decision=approve` when it has a button or input
named decision. Any other status raises with the body. At most 20 hops.
"""

from __future__ import annotations

import json
import sys
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import anyio
import httpx2

MAX_HOPS = 20


class LoginError(Exception):
    """The flow did not reach the redirect URI; `trace` lists the hops taken ("METHOD url -> status")."""

    def __init__(self, message: str, trace: list[str]) -> None:
        super().__init__(f"{message} (hops: {' | '.join(trace)})")
        self.trace = trace


class _FirstForm(HTMLParser):
    """Collects the first <form> of a page: action, method, hidden inputs and the names of its fields."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # attribute values come out HTML-unescaped
        self.found = False
        self.inside = False
        self.action: str | None = None
        self.method = "get"
        self.hidden: list[tuple[str, str]] = []
        self.names: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "form" and not self.found:
            self.found = self.inside = True
            self.action = a.get("action") or None
            self.method = (a.get("method") or "get").lower()
        elif self.inside and tag in ("input", "button", "select", "textarea") and a.get("name"):
            self.names.add(a["name"])
            if tag == "input" and a.get("type", "text").lower() == "hidden":
                self.hidden.append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False


def _strip_fragment(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(fragment=""))


async def browser_login(
    authorization_url: str,
    redirect_uri: str,
    user: str,
    *,
    max_hops: int = MAX_HOPS,
    timeout: float = 30.0,
    stop_at: str | None = None,
) -> dict[str, Any]:
    """Runs the browser steps from `authorization_url` until the redirect to `redirect_uri`; returns the
    redirect's query parameters (first value of each)."""
    trace: list[str] = []
    async with httpx2.AsyncClient(follow_redirects=False, timeout=timeout, trust_env=False) as http:
        method, url, form = "GET", authorization_url, None
        for _ in range(max_hops):
            if method == "POST":
                response = await http.post(
                    url,
                    content=urlencode(form or []).encode(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
            else:
                response = await http.get(url)
            trace.append(f"{method} {_strip_fragment(url)} -> {response.status_code}")
            if response.is_redirect:
                location = response.headers.get("location")
                if not location:
                    raise LoginError(f"{response.status_code} without a Location", trace)
                target = urljoin(url, location)
                if target.startswith(redirect_uri):
                    trace.append(f"reached {_strip_fragment(target).split('?')[0]}")
                    return dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))
                method, url, form = "GET", target, None
                continue
            if response.status_code != 200:
                raise LoginError(f"{method} {url} answered {response.status_code}: {response.text[:2000]}", trace)
            page = _FirstForm()
            page.feed(response.text)
            page.close()
            if not page.found:
                raise LoginError(f"the page at {url} has no <form>: {response.text[:2000]}", trace)
            if stop_at is not None and str(response.url).startswith(stop_at):
                return {
                    "stopped_at": str(response.url),
                    "cookies": {c.name: c.value for c in http.cookies.jar},
                    "action": urljoin(str(response.url), page.action) if page.action else str(response.url),
                    "fields": dict(page.hidden),
                }
            fields: list[tuple[str, str]] = list(page.hidden)
            if "login" in page.names:
                fields.append(("login", user))
            if "decision" in page.names:
                fields.append(("decision", "approve"))
            action = urljoin(str(response.url), page.action) if page.action else str(response.url)
            if page.method == "post":
                method, url, form = "POST", action, fields
            else:
                parts = urlsplit(action)
                method, url, form = "GET", urlunsplit(parts._replace(query=urlencode(fields), fragment="")), None
        raise LoginError(f"no redirect to {redirect_uri} within {max_hops} hops", trace)


def main() -> None:
    args = sys.argv[1:]
    stop_at = None
    if len(args) == 5 and args[3] == "--stop-at":
        stop_at = args.pop(4)
        args.pop(3)
    if len(args) != 3:
        print(json.dumps({"error": "usage: oauth_login.py AUTH_URL REDIRECT_URI USER [--stop-at URL_PREFIX]"}))
        sys.exit(2)
    try:
        out: dict[str, Any] = anyio.run(lambda: browser_login(*args, stop_at=stop_at))
    except LoginError as exc:
        print(json.dumps({"error": str(exc), "trace": exc.trace}))
        sys.exit(1)
    except Exception as exc:  # one JSON document even on failure, for the harness to show
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
