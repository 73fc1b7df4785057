"""HTTP/2 and gRPC hostile input against the real TLS listener of a running Tender, with raw frames
(hyperframe, hpack): floods, lies and slow readers. After each attack a fresh connection must get
a Health answer within 2 s, and the server's RSS and CPU are printed (and RSS bounded)."""
import os
import select
import socket
import ssl
import struct
import time

import grpc
import pytest
from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame,
    WindowUpdateFrame,
)

from tender_client.proto.grpc.health.v1 import health_pb2, health_pb2_grpc

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# RSS may grow this much over the suite's start (allocator caches, TLS sessions), no more.
RSS_BOUND = 160 * 1024 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def grpc_headers(path, extra=()):
    return [(":method", "POST"), (":scheme", "https"), (":path", path), (":authority", "localhost"),
            ("content-type", "application/grpc"), ("te", "trailers"), *extra]


def message(payload, compressed=False, length=None):
    """A gRPC length-prefixed message; `length` may lie."""
    return struct.pack(">BI", 1 if compressed else 0, len(payload) if length is None else length) + payload


class Raw:
    """One TLS connection speaking raw HTTP/2 frames, on one thread: TLS through memory BIOs, and
    whatever the server sends is read (and recorded) while anything is sent, so neither side's
    buffers hold up the other."""

    def __init__(self, server, preface=PREFACE, settings=None, stall=5.0):
        context = ssl.create_default_context(cafile=str(server["ca"]))
        context.set_alpn_protocols(["h2"])
        self.sock = socket.create_connection(("127.0.0.1", server["port"]), timeout=10)
        self.sock.setblocking(False)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.stall = stall
        self.closed = False
        self.stalled = False
        self.pending = b""
        self.buffer = b""
        self.frames = {}
        self.goaway = None
        self.resets = {}
        self.trailers = {}
        # What the server lets this side send: its initial stream window, and its window updates.
        self.initial_window = 65535
        self.window_updates = {}
        self.decoder = Decoder()
        self.encoder = Encoder()
        deadline = time.monotonic() + 10
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush_tls()
                if not self._pump(deadline - time.monotonic()):
                    raise RuntimeError("TLS handshake did not finish")
        self._flush_tls()
        if preface is not None:
            self.send(preface + SettingsFrame(0, settings=settings or {}).serialize())

    def _flush_tls(self):
        self.pending += self.outgoing.read()

    def _pump(self, timeout):
        """Waits up to `timeout` for the socket; sends what it can, reads what came. False when
        nothing could be done."""
        if self.closed:
            return False
        wanted_write = [self.sock] if self.pending else []
        readable, writable, _ = select.select([self.sock], wanted_write, [], max(0.0, timeout))
        if not readable and not writable:
            return False
        if writable:
            try:
                sent = self.sock.send(self.pending[:1 << 20])
                self.pending = self.pending[sent:]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.closed = True
        if readable:
            try:
                chunk = self.sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                chunk = None
            except OSError:
                chunk = b""
            if chunk == b"":
                self.closed = True
            elif chunk:
                self.incoming.write(chunk)
                self._decrypt()
        return True

    def _decrypt(self):
        while True:
            try:
                data = self.tls.read(1 << 20)
            except ssl.SSLWantReadError:
                return
            except (ssl.SSLZeroReturnError, ssl.SSLError):
                self.closed = True
                return
            if not data:
                self.closed = True
                return
            self.buffer += data
            self._frames()

    def _frames(self):
        while len(self.buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
            if len(self.buffer) < 9 + length:
                return
            frame.parse_body(memoryview(self.buffer[9:9 + length]))
            self.buffer = self.buffer[9 + length:]
            self._record(frame)

    def send(self, data):
        """Sends bytes, reading meanwhile; False once the server closed the connection, or when
        it took nothing for `stall` seconds (`stalled` says which)."""
        if self.closed:
            return False
        try:
            self.tls.write(data)
        except ssl.SSLError:
            self.closed = True
            return False
        self._flush_tls()
        last_progress = time.monotonic()
        while self.pending and not self.closed:
            before = len(self.pending)
            self._pump(0.2)
            if len(self.pending) < before:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > self.stall:
                self.stalled = True
                return False
        return not self.closed

    def read_for(self, seconds, until=lambda: False):
        """Reads what the server sends for up to `seconds`, or until it closes or `until()`."""
        deadline = time.monotonic() + seconds
        while not self.closed and not until() and time.monotonic() < deadline:
            self._pump(min(0.1, max(0.0, deadline - time.monotonic())))
        return self.closed

    def block(self, headers):
        # Without Huffman coding: hpack's pure-Python coder takes minutes for a MiB.
        return self.encoder.encode(headers, huffman=False)

    def _record(self, frame):
        kind = type(frame).__name__
        self.frames[kind] = self.frames.get(kind, 0) + 1
        if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
            self.initial_window = frame.settings.get(SettingsFrame.INITIAL_WINDOW_SIZE, self.initial_window)
            self.tls.write(SettingsFrame(0, flags=["ACK"]).serialize())
            self._flush_tls()
        elif isinstance(frame, WindowUpdateFrame):
            self.window_updates[frame.stream_id] = self.window_updates.get(frame.stream_id, 0) + frame.window_increment
        elif isinstance(frame, GoAwayFrame):
            self.goaway = (frame.error_code, bytes(frame.additional_data).decode(errors="replace"))
        elif isinstance(frame, RstStreamFrame):
            self.resets[frame.error_code] = self.resets.get(frame.error_code, 0) + 1
        elif isinstance(frame, HeadersFrame) and "END_HEADERS" in frame.flags:
            headers = {name.decode() if isinstance(name, bytes) else name:
                       value.decode() if isinstance(value, bytes) else value
                       for name, value in self.decoder.decode(bytes(frame.data))}
            if "grpc-status" in headers:
                self.trailers[frame.stream_id] = (headers["grpc-status"], headers.get("grpc-message", ""))

    def window(self, stream, sent):
        """How many more DATA bytes the server allows on `stream`, `sent` having been sent."""
        connection = 65535 + self.window_updates.get(0, 0)
        own = self.initial_window + self.window_updates.get(stream, 0)
        return min(connection, own) - sent

    def close(self):
        self.sock.close()

    def summary(self):
        return f"frames back {self.frames}, GOAWAY {self.goaway}, RST_STREAM codes {self.resets}"


@pytest.fixture(scope="module")
def measured(hostile_server):
    """The server's pid and its RSS when the suite began."""
    pid = hostile_server["pid"]
    healthy(hostile_server)
    return {"pid": pid, "rss": rss(pid)}


def healthy(server):
    """Health answers SERVING on a fresh connection within 2 s; returns how long it took."""
    credentials = grpc.ssl_channel_credentials(root_certificates=server["ca"].read_bytes())
    started = time.monotonic()
    with grpc.secure_channel(server["target"], credentials) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    return time.monotonic() - started


@pytest.fixture
def attack(hostile_server, measured):
    """Runs around one attack: CPU and RSS before and after, then the health check."""
    pid = measured["pid"]
    report = {"cpu": cpu_seconds(pid), "rss": rss(pid), "started": time.monotonic()}
    yield report
    elapsed = time.monotonic() - report["started"]
    cpu = cpu_seconds(pid) - report["cpu"]
    answered = healthy(hostile_server)
    after = rss(pid)
    print(f"\n[hostile] {report.get('name')}: {report.get('tried')}; {report.get('outcome', '')}"
          f"\n[hostile]   server CPU {cpu:.2f} s over {elapsed:.2f} s; RSS {report['rss'] / 2**20:.1f} -> "
          f"{after / 2**20:.1f} MiB (suite start {measured['rss'] / 2**20:.1f}); Health answered in "
          f"{answered * 1000:.0f} ms")
    assert after - measured["rss"] < RSS_BOUND, "RSS grew past its bound"


def test_rapid_reset(hostile_server, attack):
    raw = Raw(hostile_server)
    block = raw.block(grpc_headers("/grpc.health.v1.Health/Check"))
    sent = 0
    for batch in range(200):
        data = b"".join(
            HeadersFrame(stream, data=block, flags=["END_HEADERS"]).serialize()
            + RstStreamFrame(stream, error_code=8).serialize()
            for stream in range(1 + 2 * sent, 1 + 2 * (sent + 100), 2))
        if not raw.send(data):
            break
        sent += 100
    raw.read_for(5)
    raw.close()
    attack.update(name="rapid reset", tried=f"{sent} HEADERS each followed at once by RST_STREAM(CANCEL)",
                  outcome=raw.summary())
    assert raw.goaway is not None, "the server took an endless stream of reset streams"


def test_continuation_flood(hostile_server, attack):
    raw = Raw(hostile_server)
    first = raw.block(grpc_headers("/grpc.health.v1.Health/Check"))
    raw.send(HeadersFrame(1, data=first).serialize())
    filler = Encoder().encode([("x-filler", "a" * 16000)], huffman=False)
    frames = 0
    while frames < 20000 and raw.send(ContinuationFrame(1, data=filler).serialize()):
        frames += 1
    raw.read_for(5)
    raw.close()
    attack.update(name="CONTINUATION flood",
                  tried=f"one HEADERS without END_HEADERS, then {frames} CONTINUATION frames of 16 kB "
                        f"({frames * len(filler) / 1024:.0f} KiB) before the server stopped taking them",
                  outcome=raw.summary())
    assert raw.closed, "the server kept a connection with an endless header block"


@pytest.mark.parametrize("kind", ["PING", "SETTINGS"])
def test_control_frame_flood(hostile_server, attack, kind):
    raw = Raw(hostile_server)
    frame, limit = {
        "PING": (PingFrame(0, opaque_data=b"tender!!").serialize(), 200_000),
        "SETTINGS": (SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 100}).serialize(), 100_000),
    }[kind]
    sent = 0
    while sent < limit and raw.send(frame * 1000):
        sent += 1000
    raw.read_for(3)
    raw.close()
    attack.update(name=f"{kind} flood", tried=f"{sent} {kind} frames", outcome=raw.summary())
    assert raw.goaway is not None, f"the server answered a {kind} flood without ending the connection"


def test_oversized_header_list(hostile_server, attack):
    raw = Raw(hostile_server)
    block = raw.block(grpc_headers("/grpc.health.v1.Health/Check", [("x-huge", "h" * (1 << 20))]))
    chunks = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    data = HeadersFrame(1, data=chunks[0]).serialize()
    for index, chunk in enumerate(chunks[1:], start=1):
        data += ContinuationFrame(1, data=chunk, flags=["END_HEADERS"] if index == len(chunks) - 1 else []).serialize()
    raw.send(data)
    raw.read_for(5)
    raw.close()
    attack.update(name="oversized header list", tried=f"one header block of {len(block) / 2**20:.1f} MiB",
                  outcome=raw.summary())
    assert 1 not in raw.trailers or raw.trailers[1][0] != "0", "a 1 MiB header list was served"


def test_more_streams_than_allowed(hostile_server, attack):
    raw = Raw(hostile_server)
    request = message(b"")

    def watch(stream):
        block = raw.block(grpc_headers("/grpc.health.v1.Health/Watch"))
        return raw.send(HeadersFrame(stream, data=block, flags=["END_HEADERS"]).serialize()
                        + DataFrame(stream, data=request, flags=["END_STREAM"]).serialize())

    # Within HTTP/2's concurrency limit, Tender's own: 16 watches per connection.
    for stream in range(1, 101, 2):
        watch(stream)
    raw.read_for(5, until=lambda: len(raw.trailers) >= 34)
    exhausted = sum(1 for status, _ in raw.trailers.values() if status == "8")
    # Then past HTTP/2's limit (the server's SETTINGS_MAX_CONCURRENT_STREAMS).
    opened = 50
    for stream in range(101, 4001, 2):
        if not watch(stream):
            break
        opened += 1
    raw.read_for(3)
    raw.close()
    attack.update(name="more streams than allowed",
                  tried=f"50 Health/Watch streams on one connection, then {opened - 50} more without closing any",
                  outcome=f"of the first 50, {exhausted} answered RESOURCE_EXHAUSTED; {raw.summary()}")
    assert exhausted == 34, "a connection held more than 16 watches"
    assert raw.closed or raw.resets, "streams past the concurrency limit were accepted"


def test_garbage_instead_of_preface(hostile_server, attack):
    garbage = os.urandom(65536)
    raw = Raw(hostile_server, preface=garbage)
    closed_tls = raw.read_for(5)
    raw.close()
    plain = socket.create_connection(("127.0.0.1", hostile_server["port"]), timeout=5)
    try:
        plain.sendall(garbage)
        plain.settimeout(5)
        try:
            while plain.recv(65536):
                pass
            closed_plain = True
        except ConnectionResetError:
            closed_plain = True
        except socket.timeout:
            closed_plain = False
    finally:
        plain.close()
    attack.update(name="garbage instead of the preface",
                  tried="64 KiB of random bytes after the TLS handshake, and 64 KiB of them instead of one",
                  outcome=f"closed after TLS: {closed_tls}, closed without TLS: {closed_plain}; {raw.summary()}")
    assert closed_tls and closed_plain


@pytest.mark.parametrize("case", ["short", "huge", "compressed"])
def test_lying_grpc_messages(hostile_server, attack, case):
    raw = Raw(hostile_server)
    body = {
        # Says 1,000 bytes, carries 2, then ends the stream.
        "short": message(b"\x0a\x00", length=1000),
        # Says 4 GiB - 1.
        "huge": message(b"\x0a\x00", length=0xFFFFFFFF),
        # The compressed flag, without any grpc-encoding.
        "compressed": message(b"\x0a\x00", compressed=True),
    }[case]
    block = raw.block(grpc_headers("/grpc.health.v1.Health/Check"))
    raw.send(HeadersFrame(1, data=block, flags=["END_HEADERS"]).serialize()
             + DataFrame(1, data=body, flags=["END_STREAM"]).serialize())
    raw.read_for(5, until=lambda: 1 in raw.trailers or raw.resets)
    raw.close()
    answer = raw.trailers.get(1)
    attack.update(name=f"gRPC message that lies ({case})", tried=f"prefix {body[:5].hex()}",
                  outcome=f"grpc-status {answer}; {raw.summary()}")
    assert answer is not None and answer[0] != "0" or raw.resets or raw.closed, "the lie was answered OK"


def slow_reader(server, attack, within_window):
    # A zero stream window: the server may not send one byte of its answers on the stream.
    raw = Raw(server, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    block = raw.block(grpc_headers("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"))
    raw.send(HeadersFrame(1, data=block, flags=["END_HEADERS"]).serialize())
    raw.read_for(1, until=lambda: raw.frames.get("SettingsFrame", 0) >= 2)
    # file_containing_symbol (field 6): every answer carries descriptors of several kB.
    symbol = b"tender.payments.v1.PaymentService"
    request = message(b"\x32" + bytes([len(symbol)]) + symbol)
    chunk = request * 400
    sent_bytes = 0
    started = time.monotonic()
    while time.monotonic() - started < 20:
        if within_window and raw.window(1, sent_bytes) < len(chunk):
            # Wait for the server to open the window again; it stops once it holds enough.
            before = dict(raw.window_updates)
            raw.read_for(2, until=lambda: raw.window_updates != before)
            if raw.window_updates == before or raw.closed:
                break
            continue
        if not raw.send(DataFrame(1, data=chunk).serialize()):
            break
        sent_bytes += len(chunk)
    stuck = time.monotonic() - started
    raw.read_for(2)
    held = rss(server["pid"])
    raw.send(RstStreamFrame(1, error_code=8).serialize())
    raw.close()
    return raw, sent_bytes // len(request), stuck, held


def test_slow_reader_on_a_stream(hostile_server, attack):
    raw, sent, stuck, held = slow_reader(hostile_server, attack, within_window=True)
    attack.update(name="slow reader (zero window) on a streaming RPC",
                  tried=f"{sent} reflection requests on one stream, within the windows the server granted, "
                        f"while its answers could not be sent; the server stopped granting after {stuck:.1f} s",
                  outcome=f"RSS while held {held / 2**20:.1f} MiB; {raw.summary()}")
    assert stuck < 20, "the server kept taking requests it could not answer"


def test_data_past_the_window(hostile_server, attack):
    raw, sent, stuck, held = slow_reader(hostile_server, attack, within_window=False)
    attack.update(name="DATA past the flow-control window",
                  tried=f"{sent} reflection requests on one stream, ignoring the window",
                  outcome=f"RSS while held {held / 2**20:.1f} MiB; {raw.summary()}")
    assert raw.resets.get(3) or raw.closed, "DATA past the window was taken"
