"""An OpenTelemetry trace receiver for the mcpgw end-to-end tests, built on the official OTLP protobuf
definitions (PyPI `opentelemetry-proto`) and grpcio: it takes `ExportTraceServiceRequest`s over OTLP/HTTP
(`POST /v1/traces`, `application/x-protobuf`) and over OTLP/gRPC (`TraceService/Export`), and writes each
span it receives as one JSON line on stdout:

    {"protocol": "http"|"grpc", "service": ..., "trace_id": hex, "span_id": hex, "parent_span_id": hex|"",
     "name": ..., "kind": "SERVER"|"CLIENT"|"INTERNAL"|..., "status": "UNSET"|"OK"|"ERROR",
     "start_ns": int, "end_ns": int, "attributes": {key: value}}

It first prints `listening http=<port> grpc=<port>` (both bound on 127.0.0.1, port 0 unless given).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

LOCK = threading.Lock()


def value(any_value) -> object:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in any_value.kvlist_value.values}
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return getattr(any_value, kind) if kind else None


def emit(request: trace_service_pb2.ExportTraceServiceRequest, protocol: str) -> None:
    lines = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                lines.append(
                    json.dumps(
                        {
                            "protocol": protocol,
                            "service": resource.get("service.name"),
                            "instance": resource.get("service.instance.id"),
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "name": span.name,
                            "kind": trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                            "status": trace_pb2.Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                            "start_ns": span.start_time_unix_nano,
                            "end_ns": span.end_time_unix_nano,
                            "attributes": {kv.key: value(kv.value) for kv in span.attributes},
                        }
                    )
                )
    with LOCK:
        for line in lines:
            print(line)
        sys.stdout.flush()


class Http(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        if self.headers.get("content-type", "").split(";")[0].strip() != "application/x-protobuf":
            self.send_error(415)
            return
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        request = trace_service_pb2.ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception as exc:  # a malformed body is the exporter's bug: 400 and a note on stderr
            print(f"otlp_receiver: undecodable body: {exc}", file=sys.stderr, flush=True)
            self.send_error(400)
            return
        emit(request, "http")
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature of the base class)
        return


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):  # noqa: N802 (generated name)
        emit(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-port", type=int, default=0)
    parser.add_argument("--grpc-port", type=int, default=0)
    args = parser.parse_args()
    http = ThreadingHTTPServer(("127.0.0.1", args.http_port), Http)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    grpc_port = server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
    server.start()
    print(f"listening http={http.server_address[1]} grpc={grpc_port}", flush=True)
    try:
        http.serve_forever()
    finally:
        server.stop(None)


if __name__ == "__main__":
    main()
