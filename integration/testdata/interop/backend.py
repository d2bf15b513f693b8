"""A gRPC backend on C-core (Debian's python3-grpcio): grpc.testing.TestService
with the semantics of grpc-go's interop server, and grpc.health.v1.Health
written with generic handlers (python3-grpcio has no health package).

Prints "listening PORT" once serving. Commands on stdin, one a line:
  status SERVICE SERVING|NOT_SERVING   set a health status ("-" is "")
SIGTERM stops it gracefully (server.stop with a grace period).

Flags: --port N, --id ID, --max-connection-age-ms N, --max-concurrent-streams N
"""

import argparse
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

import pb

SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3
STATUS = {"SERVING": SERVING, "NOT_SERVING": NOT_SERVING}


class Health:
    def __init__(self):
        self.cond = threading.Condition()
        self.status = {"": SERVING}
        self.version = 0

    def set(self, service, status):
        with self.cond:
            self.status[service] = status
            self.version += 1
            self.cond.notify_all()

    def check(self, request, context):
        service = pb.first(pb.dec(request), 1, b"").decode()
        with self.cond:
            st = self.status.get(service)
        if st is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return pb.enc([(1, st)])

    def watch(self, request, context):
        service = pb.first(pb.dec(request), 1, b"").decode()
        last = None
        while context.is_active():
            with self.cond:
                st = self.status.get(service, SERVICE_UNKNOWN)
                if st == last:
                    self.cond.wait(0.2)
                    continue
            last = st
            yield pb.enc([(1, st)])


def echo_metadata(context):
    md = dict(context.invocation_metadata())
    if "x-grpc-test-echo-initial" in md:
        context.send_initial_metadata((("x-grpc-test-echo-initial", md["x-grpc-test-echo-initial"]),))
    if "x-grpc-test-echo-trailing-bin" in md:
        context.set_trailing_metadata((("x-grpc-test-echo-trailing-bin", md["x-grpc-test-echo-trailing-bin"]),))


def check_status(req, context):
    st = pb.first(req, 7)
    if st:
        st = pb.dec(st)
        code = pb.first(st, 1, 0)
        if code:
            msg = pb.first(st, 2, b"").decode()
            sc = next(c for c in grpc.StatusCode if c.value[0] == code)
            context.abort(sc, msg)


class TestService:
    def __init__(self, server_id):
        self.server_id = server_id

    def empty(self, request, context):
        echo_metadata(context)
        return b""

    def unary(self, request, context):
        echo_metadata(context)
        req = pb.dec(request)
        check_status(req, context)
        fields = [(1, pb.payload(pb.first(req, 2, 0)))]
        if pb.first(req, 9):
            fields.append((4, self.server_id))
        return pb.enc(fields)

    def streaming_output(self, request, context):
        echo_metadata(context)
        req = pb.dec(request)
        for params in req.get(2, []):
            p = pb.dec(params)
            interval = pb.first(p, 2, 0)
            if interval:
                time.sleep(interval / 1e6)
            yield pb.enc([(1, pb.payload(pb.first(p, 1, 0)))])
        check_status(req, context)

    def streaming_input(self, request_iterator, context):
        total = 0
        for request in request_iterator:
            total += pb.payload_size(pb.first(pb.dec(request), 1, b""))
        return pb.enc([(1, total)])

    def full_duplex(self, request_iterator, context):
        echo_metadata(context)
        for request in request_iterator:
            req = pb.dec(request)
            check_status(req, context)
            for params in req.get(2, []):
                p = pb.dec(params)
                interval = pb.first(p, 2, 0)
                if interval:
                    time.sleep(interval / 1e6)
                yield pb.enc([(1, pb.payload(pb.first(p, 1, 0)))])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--id", default="python")
    ap.add_argument("--max-connection-age-ms", type=int, default=0)
    ap.add_argument("--max-concurrent-streams", type=int, default=0)
    args = ap.parse_args()

    options = [("grpc.so_reuseport", 0)]
    if args.max_connection_age_ms:
        options += [("grpc.max_connection_age_ms", args.max_connection_age_ms),
                    ("grpc.max_connection_age_grace_ms", 30000)]
    if args.max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", args.max_concurrent_streams))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), options=options,
                         maximum_concurrent_rpcs=None)
    health = Health()
    ts = TestService(args.id)
    h = grpc.unary_unary_rpc_method_handler
    ss = grpc.unary_stream_rpc_method_handler
    su = grpc.stream_unary_rpc_method_handler
    st = grpc.stream_stream_rpc_method_handler
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("grpc.testing.TestService", {
            "EmptyCall": h(ts.empty),
            "UnaryCall": h(ts.unary),
            "StreamingOutputCall": ss(ts.streaming_output),
            "StreamingInputCall": su(ts.streaming_input),
            "FullDuplexCall": st(ts.full_duplex),
        }),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": h(health.check),
            "Watch": ss(health.watch),
        }),
    ))
    port = server.add_insecure_port("127.0.0.1:%d" % args.port)
    server.start()
    print("listening %d" % port, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def commands():
        for line in sys.stdin:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "status":
                health.set("" if parts[1] == "-" else parts[1], STATUS[parts[2]])
                print("ok", flush=True)
        stop.set()

    threading.Thread(target=commands, daemon=True).start()
    stop.wait()
    # Graceful: no new RPCs, GOAWAY to clients, in-flight ones get 10 s.
    server.stop(10).wait()


if __name__ == "__main__":
    main()
