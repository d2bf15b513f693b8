"""A minimal protobuf codec for the grpc.testing and grpc.health.v1 messages
vigil's interop tests use. Debian's python3-grpcio has no generated test
protos (and no grpcio-tools), so messages are encoded by hand: only varint
and length-delimited fields occur in them."""


def _varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def enc(fields):
    """fields: list of (number, value); int -> varint, bytes/str -> bytes."""
    out = bytearray()
    for num, val in fields:
        if val is None:
            continue
        if isinstance(val, bool):
            val = int(val)
        if isinstance(val, int):
            out += _varint(num << 3 | 0) + _varint(val)
        else:
            if isinstance(val, str):
                val = val.encode()
            out += _varint(num << 3 | 2) + _varint(len(val)) + val
    return bytes(out)


def dec(buf):
    """Returns {number: [values]}: ints for varints, bytes otherwise."""
    out = {}
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _read_varint(buf, i)
        elif wire == 2:
            n, i = _read_varint(buf, i)
            val, i = bytes(buf[i:i + n]), i + n
        elif wire == 5:
            val, i = bytes(buf[i:i + 4]), i + 4
        elif wire == 1:
            val, i = bytes(buf[i:i + 8]), i + 8
        else:
            raise ValueError("unsupported wire type %d" % wire)
        out.setdefault(num, []).append(val)
    return out


def _read_varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def first(d, num, default=None):
    v = d.get(num)
    return v[0] if v else default


# grpc.testing messages (field numbers from test/grpc/testing/messages.proto)

def payload(size):
    return enc([(1, 0), (2, b"\x00" * size)])  # COMPRESSABLE


def payload_size(msg_payload):
    return len(first(dec(msg_payload), 2, b""))


def simple_request(response_size=0, payload_size_=0, status=None, fill_server_id=False):
    st = enc([(1, status[0]), (2, status[1])]) if status else None
    return enc([(2, response_size), (3, payload(payload_size_) if payload_size_ else None),
                (7, st), (9, fill_server_id or None)])


def streaming_output_request(sizes, payload_size_=0, status=None):
    fields = [(2, enc([(1, s)])) for s in sizes]
    if payload_size_:
        fields.append((3, payload(payload_size_)))
    if status:
        fields.append((7, enc([(1, status[0]), (2, status[1])])))
    return enc(fields)
