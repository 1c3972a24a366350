"""A small OTLP/HTTP trace receiver: what tests and loadtests.bench_tracing export to.

No collector, Jaeger or Tempo is packaged here, so the wire is checked against the official
`opentelemetry-proto` messages instead: every POST to /v1/traces is decoded as an
ExportTraceServiceRequest and its spans kept, flattened to plain dicts (ids in hex).
Serves on a loopback port in a thread of this process; `with OtlpReceiver() as r:`.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

PATH = "/v1/traces"


def _value(v: AnyValue):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _attrs(kvs) -> dict:
    return {kv.key: _value(kv.value) for kv in kvs}


class OtlpReceiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.spans: list[dict] = []
        self.requests = 0
        self.count_only = False  # a benchmark needs the bytes received, not the spans kept
        self.spans_received = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != PATH:
                    self.send_error(404, f"only {PATH} is served")
                    return
                receiver._take(body)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format, *args):  # noqa: A002 - silence the per-request line
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}{PATH}"

    def _take(self, body: bytes) -> None:
        req = ExportTraceServiceRequest.FromString(body)
        out = []
        n = 0
        for rs in req.resource_spans:
            resource = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                n += len(ss.spans)
                if self.count_only:
                    continue
                for s in ss.spans:
                    out.append({
                        "name": s.name, "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(), "attributes": _attrs(s.attributes),
                        "links": [{"trace_id": lk.trace_id.hex(), "span_id": lk.span_id.hex(),
                                   "attributes": _attrs(lk.attributes)} for lk in s.links],
                        "events": [{"name": e.name, "attributes": _attrs(e.attributes)} for e in s.events],
                        "service": resource.get("service.name")})
        with self._lock:
            self.requests += 1
            self.spans_received += n
            self.spans += out

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
