"""A fake Kubernetes API server for the mcpgw end-to-end tests: just the Service reads the control plane's
service discovery makes, with the API's own shapes and semantics.

- `GET /api/v1/namespaces/<ns>/services` and `GET /api/v1/services`: a `ServiceList` with
  `metadata.resourceVersion`.
- The same with `?watch=1&resourceVersion=<v>`: a stream of JSON watch events (`{"type": "ADDED" |
  "MODIFIED" | "DELETED", "object": <Service>}`, one per line) of every change after `<v>`, held open until
  `timeoutSeconds`.
- Every request must carry `Authorization: Bearer <--token>` (401 otherwise), as with a service account.

The test drives it: `PUT /_test/services` with a JSON list of Services replaces the cluster's Services (each
added, changed or removed one is an event), `GET /_test/requests` counts the requests per path.
It first prints `listening port=<port>`.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

STATE = threading.Condition()
SERVICES: dict[tuple[str, str], dict] = {}
EVENTS: list[tuple[int, str, dict]] = []  # (resourceVersion, type, object)
VERSION = [1]
REQUESTS: dict[str, int] = {}
TOKEN = [""]


def with_version(obj: dict, version: int) -> dict:
    obj = json.loads(json.dumps(obj))
    obj.setdefault("metadata", {})["resourceVersion"] = str(version)
    return obj


def replace(services: list[dict]) -> None:
    with STATE:
        wanted = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in services}
        for key, old in list(SERVICES.items()):
            if key not in wanted:
                VERSION[0] += 1
                del SERVICES[key]
                EVENTS.append((VERSION[0], "DELETED", with_version(old, VERSION[0])))
        for key, new in wanted.items():
            if SERVICES.get(key) == new:
                continue
            VERSION[0] += 1
            kind = "MODIFIED" if key in SERVICES else "ADDED"
            SERVICES[key] = new
            EVENTS.append((VERSION[0], kind, with_version(new, VERSION[0])))
        STATE.notify_all()


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # bodies end when the connection closes, as a watch stream does

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:  # noqa: N802
        if self.path != "/_test/services":
            self.reply(404, {"kind": "Status", "code": 404})
            return
        replace(json.loads(self.rfile.read(int(self.headers.get("content-length", "0")))))
        self.reply(200, {"resourceVersion": str(VERSION[0])})

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        if url.path == "/_test/requests":
            with STATE:
                self.reply(200, dict(REQUESTS))
            return
        with STATE:
            REQUESTS[url.path] = REQUESTS.get(url.path, 0) + 1
        if self.headers.get("authorization", "") != f"Bearer {TOKEN[0]}":
            self.reply(401, {"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401})
            return
        parts = url.path.strip("/").split("/")
        if parts == ["api", "v1", "services"]:
            namespace = None
        elif len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "services":
            namespace = parts[3]
        else:
            self.reply(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})
            return
        query = parse_qs(url.query)
        if query.get("watch", ["0"])[0] in ("1", "true"):
            self.watch(namespace, int(query.get("resourceVersion", ["0"])[0] or 0),
                       int(query.get("timeoutSeconds", ["30"])[0]))
            return
        with STATE:
            items = [s for (ns, _), s in sorted(SERVICES.items()) if namespace in (None, ns)]
            self.reply(200, {"kind": "ServiceList", "apiVersion": "v1",
                             "metadata": {"resourceVersion": str(VERSION[0])}, "items": items})

    def watch(self, namespace: str | None, since: int, timeout: int) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        deadline = time.monotonic() + timeout
        sent = since
        while True:
            with STATE:
                pending = [e for e in EVENTS if e[0] > sent and namespace in (None, e[2]["metadata"]["namespace"])]
                if not pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    STATE.wait(min(left, 1.0))
                    continue
            for version, kind, obj in pending:
                try:
                    self.wfile.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                    self.wfile.flush()
                except OSError:
                    return
                sent = version

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    TOKEN[0] = args.token
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Api)
    server.daemon_threads = True
    print(f"listening port={server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
