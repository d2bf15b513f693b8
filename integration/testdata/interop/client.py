"""A gRPC client on C-core (Debian's python3-grpcio) that runs interop cases
against TARGET (vigil in front of grpc-go's interop server, which attaches
error details to INVALID_ARGUMENT answers). Prints one JSON object per case:
{"case": NAME, "ok": BOOL, "detail": TEXT}.

Usage: client.py TARGET [CASE...]
"""

import json
import queue
import sys
import threading
import time

import grpc

import pb

SVC = "/grpc.testing.TestService/"


def unary(ch, method):
    return ch.unary_unary(SVC + method)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def code_of(err):
    return err.code() if isinstance(err, grpc.RpcError) else None


def case_empty_unary(ch):
    expect(unary(ch, "EmptyCall")(b"", timeout=10) == b"", "non-empty response")


def case_large_unary(ch):
    resp = pb.dec(unary(ch, "UnaryCall")(pb.simple_request(314159, 271828), timeout=10))
    expect(pb.payload_size(pb.first(resp, 1, b"")) == 314159, "response payload size")


def case_large_messages(ch):
    n = 3 << 20
    resp = pb.dec(unary(ch, "UnaryCall")(pb.simple_request(n, n), timeout=30))
    expect(pb.payload_size(pb.first(resp, 1, b"")) == n, "3 MiB response")


def case_client_streaming(ch):
    sizes = [27182, 8, 1828, 45904]
    call = ch.stream_unary(SVC + "StreamingInputCall")
    resp = call(iter([pb.enc([(1, pb.payload(s))]) for s in sizes]), timeout=10)
    expect(pb.first(pb.dec(resp), 1) == sum(sizes), "aggregated size")


def case_server_streaming(ch):
    sizes = [31415, 9, 2653, 58979]
    got = [pb.payload_size(pb.first(pb.dec(m), 1, b""))
           for m in ch.unary_stream(SVC + "StreamingOutputCall")(pb.streaming_output_request(sizes), timeout=10)]
    expect(got == sizes, "sizes %r" % got)


def case_ping_pong(ch):
    sizes, reqs = [31415, 9, 2653, 58979], [27182, 8, 1828, 45904]
    q = queue.Queue()

    def gen():
        while True:
            item = q.get()
            if item is None:
                return
            yield item
    call = ch.stream_stream(SVC + "FullDuplexCall")(gen(), timeout=10)
    got = []
    for size, req in zip(sizes, reqs):
        q.put(pb.streaming_output_request([size], req))
        got.append(pb.payload_size(pb.first(pb.dec(next(call)), 1, b"")))
    q.put(None)
    expect(list(call) == [], "messages after the last")
    expect(got == sizes, "sizes %r" % got)


def case_empty_stream(ch):
    expect(list(ch.stream_stream(SVC + "FullDuplexCall")(iter([]), timeout=10)) == [], "messages")


def case_custom_metadata(ch):
    md = (("x-grpc-test-echo-initial", "test_initial_metadata_value"),
          ("x-grpc-test-echo-trailing-bin", b"\x0a\x0b\x0a\x0b\x0a\x0b"))
    _, call = unary(ch, "UnaryCall").with_call(pb.simple_request(314159, 271828), metadata=md, timeout=10)
    expect(("x-grpc-test-echo-initial", "test_initial_metadata_value") in call.initial_metadata(), "initial metadata")
    expect(("x-grpc-test-echo-trailing-bin", b"\x0a\x0b\x0a\x0b\x0a\x0b") in call.trailing_metadata(), "trailing metadata")
    stream = ch.stream_stream(SVC + "FullDuplexCall")(iter([pb.streaming_output_request([314159], 271828)]), metadata=md, timeout=10)
    list(stream)
    expect(("x-grpc-test-echo-initial", "test_initial_metadata_value") in stream.initial_metadata(), "stream initial metadata")
    expect(("x-grpc-test-echo-trailing-bin", b"\x0a\x0b\x0a\x0b\x0a\x0b") in stream.trailing_metadata(), "stream trailing metadata")


def case_status_code_and_message(ch):
    for msg in ["test status message", "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"]:
        try:
            unary(ch, "UnaryCall")(pb.simple_request(status=(2, msg)), timeout=10)
            raise AssertionError("no error")
        except grpc.RpcError as e:
            expect(e.code() == grpc.StatusCode.UNKNOWN and e.details() == msg, "got %s %r" % (e.code(), e.details()))


def case_error_details(ch):
    try:
        unary(ch, "UnaryCall")(pb.simple_request(status=(3, "with details")), timeout=10)
        raise AssertionError("no error")
    except grpc.RpcError as e:
        expect(e.code() == grpc.StatusCode.INVALID_ARGUMENT, "code %s" % e.code())
        details = dict(e.trailing_metadata()).get("grpc-status-details-bin")
        expect(details is not None, "no grpc-status-details-bin")
        st = pb.dec(details)
        expect(pb.first(st, 1) == 3 and pb.first(st, 2) == b"with details", "status %r" % st)
        anys = [pb.dec(a) for a in st.get(3, [])]
        expect(anys and pb.first(anys[0], 1, b"").endswith(b"grpc.testing.Payload"), "details %r" % anys)


def case_deadline_exceeded(ch):
    # A stream open past its deadline while the server waits for more.
    block = threading.Event()

    def gen():
        yield pb.streaming_output_request([1])
        block.wait(5)
    try:
        list(ch.stream_stream(SVC + "FullDuplexCall")(gen(), timeout=0.5))
        raise AssertionError("no deadline")
    except grpc.RpcError as e:
        expect(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, "code %s" % e.code())
    finally:
        block.set()


def case_cancel_after_begin(ch):
    block = threading.Event()

    def gen():
        block.wait(5)
        return
        yield
    fut = ch.stream_unary(SVC + "StreamingInputCall").future(gen(), timeout=10)
    time.sleep(0.1)
    fut.cancel()
    block.set()
    expect(fut.cancelled(), "not cancelled")


def case_cancel_after_first_response(ch):
    block = threading.Event()

    def gen():
        yield pb.streaming_output_request([31415], 27182)
        block.wait(5)
    call = ch.stream_stream(SVC + "FullDuplexCall")(gen(), timeout=10)
    next(call)
    call.cancel()
    block.set()
    try:
        next(call)
        raise AssertionError("stream went on")
    except grpc.RpcError as e:
        expect(e.code() == grpc.StatusCode.CANCELLED, "code %s" % e.code())


def case_gzip(ch):
    resp = pb.dec(unary(ch, "UnaryCall")(pb.simple_request(314159, 271828), timeout=10, compression=grpc.Compression.Gzip))
    expect(pb.payload_size(pb.first(resp, 1, b"")) == 314159, "response payload size")
    got = [pb.payload_size(pb.first(pb.dec(m), 1, b"")) for m in ch.stream_stream(SVC + "FullDuplexCall")(
        iter([pb.streaming_output_request([1000], 50000)] * 3), timeout=10, compression=grpc.Compression.Gzip)]
    expect(got == [1000] * 3, "stream sizes %r" % got)


def case_unimplemented_method(ch):
    try:
        unary(ch, "UnimplementedCall")(b"", timeout=10)
        raise AssertionError("no error")
    except grpc.RpcError as e:
        expect(e.code() == grpc.StatusCode.UNIMPLEMENTED, "code %s" % e.code())


def case_vigil_health(ch):
    resp = ch.unary_unary("/grpc.health.v1.Health/Check")(pb.enc([(1, "")]), timeout=10)
    expect(pb.first(pb.dec(resp), 1) == 1, "not SERVING")


def case_stream_limit(ch):
    # Many more concurrent calls than the listener's max_concurrent_streams:
    # C-core queues the rest and opens the next stream the moment it reads
    # one's END_STREAM; none may be refused.
    call = unary(ch, "UnaryCall")
    total, window, failures = 4000, 64, []
    pending = []
    for i in range(total):
        pending.append(call.future(pb.simple_request(10, 10), timeout=30))
        if len(pending) >= window:
            f = pending.pop(0)
            try:
                f.result()
            except grpc.RpcError as e:
                failures.append("%s: %s" % (e.code(), e.details()))
    for f in pending:
        try:
            f.result()
        except grpc.RpcError as e:
            failures.append("%s: %s" % (e.code(), e.details()))
    expect(not failures, "%d of %d calls failed: %s" % (len(failures), total, failures[:3]))


CASES = [(name[len("case_"):], fn) for name, fn in globals().items() if name.startswith("case_")]


def main():
    target = sys.argv[1]
    only = set(sys.argv[2:])
    opts = [("grpc.max_receive_message_length", 8 << 20), ("grpc.enable_retries", 0)]
    with grpc.insecure_channel(target, options=opts) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        for name, fn in CASES:
            if only and name not in only:
                continue
            start = time.time()
            try:
                fn(ch)
                res = {"case": name, "ok": True}
            except Exception as e:  # noqa: BLE001 - every failure is reported
                res = {"case": name, "ok": False, "detail": "%s: %s" % (type(e).__name__, e)}
            res["seconds"] = round(time.time() - start, 3)
            print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
