"""A TCP proxy in front of PostgreSQL that injects network faults, for the fault tests.

It runs in threads of the test process, listens on a free port of 127.0.0.1 and forwards each
connection to the real server. A test points worker processes at ``proxy.port`` and then:

- ``proxy.partition(3)``: a network partition for 3 s. Every open connection is cut (both
  sockets closed: the client gets a connection error on its next use, the server ends the
  session and rolls back its transaction), and connections opened during the window are
  closed as soon as they are accepted. ``partition(3, blackhole=True)`` holds traffic instead
  (nothing is forwarded either way until the window ends, and nothing is closed).
- ``proxy.cut_after(predicate)``: when a statement whose SQL text satisfies ``predicate``
  passes, it is forwarded, the server's reply to it is awaited (so the statement really ran:
  in autocommit, it committed), the reply is thrown away and the connection is closed on both
  sides: "the statement ran, its reply was lost". ``at_commit=True`` cuts after the reply to
  the statement that ends the matched statement's transaction instead (its COMMIT), and
  ``replied`` makes the rule apply only when the matched statement's reply satisfies it (say,
  when an ``UPDATE ... RETURNING`` returned a given id). ``proxy.cuts`` lists what was cut;
  ``proxy.wait_for_cut(timeout)`` waits for the next one.

The client→server stream is parsed by the wire protocol's framing (the startup packet has no
type byte, every later message has a type byte and a 4-byte length), so a predicate always sees
whole statements: the text of a simple Query ('Q'), or of a Parse ('P') with the values of each
Bind ('B') written in place of its ``$n`` placeholders (a text value quoted, a binary one of 16
bytes as a UUID, of 2, 4 or 8 bytes as an integer, any other as hex), so that a predicate reads
the same text whether the client bound its values on the server (cq's statements on every
task's way, prepared after a few runs) or on the client (Django's other queries). The server→client stream is framed
the same way, to find the end of each reply (ReadyForQuery, 'Z', which also tells whether the
session is inside a transaction). The proxy answers SSL and GSSAPI encryption requests itself
with "no", so the traffic stays readable whatever the client's ``sslmode``.

Only the standard library; nothing here is cq's.
"""

from __future__ import annotations

import collections
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104

Predicate = Callable[[str], bool]


@dataclass(frozen=True)
class Cut:
    """A connection the proxy closed after the server answered ``sql`` (its reply was dropped)."""

    sql: str
    #: With ``at_commit``: the statement whose transaction ended with ``sql``; else the same as sql.
    matched: str
    #: The server's reply that the client never got, as text (for messages and assertions).
    reply: str
    at: float = field(default_factory=time.monotonic)

    def __str__(self) -> str:
        return self.sql if self.matched == self.sql else f"{self.matched} ... {self.sql}"


@dataclass(eq=False)
class _Rule:
    predicate: Predicate
    times: int
    at_commit: bool
    replied: Predicate | None
    fired: int = 0

    @property
    def left(self) -> bool:
        return self.fired < self.times


@dataclass(eq=False)
class _Watch:
    rule: _Rule
    sql: str
    decided: bool  # the cut is already booked: only the reply is awaited


class PgProxy:
    """See the module's docstring. Use as a context manager, or call :meth:`close`."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432), host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.cuts: list[Cut] = []
        #: Every statement that went through, newest last (to find what to match, and for messages).
        self.seen: collections.deque[str] = collections.deque(maxlen=5000)
        #: Errors of the proxy's own threads or of a predicate: a test should find none.
        self.errors: list[str] = []
        self.accepted = 0
        self.refused = 0  # connections closed at once because they came during a partition
        self.partitions = 0
        self._rules: list[_Rule] = []
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._down_until = 0.0
        self._held_until = 0.0
        self._closed = False
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.1)
        self.host, self.port = self._listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept, name=f"pg-proxy-{self.port}", daemon=True)
        self._thread.start()

    def __enter__(self) -> PgProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PgProxy {self.host}:{self.port} -> {self.upstream[0]}:{self.upstream[1]}>"

    # -- faults -----------------------------------------------------------------------------

    def cut_after(self, predicate: Predicate, times: int = 1, *, at_commit: bool = False,
                  replied: Predicate | None = None) -> None:
        """Cut the connection of the next ``times`` statements satisfying ``predicate`` (and
        whose reply satisfies ``replied``, if given) once the server has answered them, or,
        with ``at_commit``, once the server has answered the statement that ends their
        transaction (right away for a statement run outside one)."""
        with self._lock:
            self._rules.append(_Rule(predicate, times, at_commit, replied))

    def clear(self) -> None:
        """Forget the rules of :meth:`cut_after` (the cuts already made stay in ``cuts``)."""
        with self._lock:
            self._rules.clear()

    def partition(self, seconds: float | None = None, *, blackhole: bool = False) -> int:
        """Start a partition of ``seconds`` (until :meth:`heal` when ``None``); returns at once.
        Cuts every open connection, unless ``blackhole``: then traffic is held, not cut.
        Returns how many connections were cut."""
        until = float("inf") if seconds is None else time.monotonic() + seconds
        with self._lock:
            self.partitions += 1
            if blackhole:
                self._held_until = until
                return 0
            self._down_until = until
            links = list(self._links)
        for link in links:
            link.close()
        return len(links)

    def heal(self) -> None:
        """End a partition now."""
        with self._lock:
            self._down_until = self._held_until = 0.0

    @property
    def partitioned(self) -> bool:
        return time.monotonic() < max(self._down_until, self._held_until)

    def wait_for_cut(self, timeout: float = 10, count: int = 1) -> Cut:
        """Wait until the proxy has made ``count`` cuts in all; returns the ``count``-th."""
        deadline = time.monotonic() + timeout
        want = count
        with self._changed:
            while len(self.cuts) < want:
                left = deadline - time.monotonic()
                if left <= 0:
                    recent = "\n  ".join(list(self.seen)[-15:])
                    raise AssertionError(f"the proxy cut {len(self.cuts)} connection(s) in {timeout} s, not {want}; "
                                         f"the last statements through it:\n  {recent}")
                self._changed.wait(left)
            return self.cuts[want - 1]

    @property
    def connections(self) -> int:
        """Connections open through the proxy now."""
        with self._lock:
            return len(self._links)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._held_until = 0.0
            links = list(self._links)
        for link in links:
            link.close()
        self._thread.join(5)
        self._listener.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as error:
                if not self._closed:
                    self.errors.append(f"accept: {error!r}")
                return
            client.settimeout(None)
            with self._lock:
                self.accepted += 1
                refuse = self._closed or time.monotonic() < self._down_until
                if refuse:
                    self.refused += 1
            if refuse:
                _close(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, server)
            with self._lock:
                if self._closed or time.monotonic() < self._down_until:
                    self.refused += 1
                    refuse = True
                else:
                    self._links.add(link)
            if refuse:
                link.close()
            else:
                link.start()

    def _held(self) -> bool:
        return time.monotonic() < self._held_until and not self._closed

    def _record(self, cut: Cut) -> None:
        with self._changed:
            self.cuts.append(cut)
            self._changed.notify_all()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _check(self, predicate: Predicate, text: str) -> bool:
        try:
            return bool(predicate(text))
        except Exception as error:  # a broken predicate must not kill the proxy's thread
            self.errors.append(f"predicate {predicate!r} raised {error!r}")
            return False


class _Link:
    """One client connection and its server connection, with a thread per direction."""

    def __init__(self, proxy: PgProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client, self.server = client, server
        self._closed = threading.Event()
        self._lock = proxy._lock
        self.requests = 0  # requests sent that each end with a ReadyForQuery: startup, Query, Sync
        self.replies = 0  # ReadyForQuery messages received
        self.texts: dict[int, str] = {}  # the last statement of each request not yet answered
        self.watches: dict[int, _Watch] = {}  # by the number of the request whose reply decides
        self.commit_watch: _Watch | None = None  # at_commit: cut when the transaction ends
        self.statements: dict[bytes, str] = {}  # parsed statements, by name (b"": the unnamed one)

    def start(self) -> None:
        for target, name in ((self._upstream, "up"), (self._downstream, "down")):
            threading.Thread(target=self._guard, args=(target,), name=f"pg-proxy-{self.proxy.port}-{name}",
                             daemon=True).start()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        _close(self.client)
        _close(self.server)
        self.proxy._forget(self)

    def _guard(self, pump: Callable[[], None]) -> None:
        try:
            pump()
        except OSError:
            pass  # a socket closed under us: a cut, a partition, or an end of either side
        except Exception as error:
            self.proxy.errors.append(f"{pump.__name__}: {error!r}")
        finally:
            self.close()

    def _send(self, sock: socket.socket, data: bytes | bytearray) -> None:
        while self.proxy._held():
            if self._closed.wait(0.01):
                return
        if data and not self._closed.is_set():
            sock.sendall(data)

    # client -> server

    def _upstream(self) -> None:
        buf = bytearray()
        startup = True
        while chunk := self.client.recv(65536):
            buf += chunk
            out = bytearray()
            while True:
                if startup:
                    if len(buf) < 8:
                        break
                    size = struct.unpack_from("!I", buf)[0]
                    if len(buf) < size:
                        break
                    message = bytes(buf[:size])
                    del buf[:size]
                    code = struct.unpack_from("!I", message, 4)[0]
                    if code in (SSL_REQUEST, GSSENC_REQUEST):
                        self._send(self.client, b"N")  # no encryption: the client goes on in the clear
                        continue
                    startup = False
                    self.requests = 1  # authentication ends with the first ReadyForQuery
                    out += message
                    continue
                if len(buf) < 5:
                    break
                size = struct.unpack_from("!I", buf, 1)[0] + 1
                if len(buf) < size:
                    break
                message = bytes(buf[:size])
                del buf[:size]
                self._inspect(message)  # before it is forwarded: its reply must find its watch
                out += message
            self._send(self.server, out)

    def _inspect(self, message: bytes) -> None:
        kind, body = message[:1], message[5:]
        if kind == b"Q":
            self._statement(_cstring(body), self.requests)
            self.requests += 1
        elif kind == b"P":
            name, _, rest = body.partition(b"\0")
            self.statements[name] = _cstring(rest)  # the unnamed statement (b"") too, until the next Parse
        elif kind == b"B":
            _portal, statement, values = body.split(b"\0", 2)
            if statement in self.statements:  # each run of a statement, prepared or not, is bound
                self._statement(_bound(self.statements[statement], values), self.requests)
        elif kind == b"S":
            self.requests += 1

    def _statement(self, sql: str, request: int) -> None:
        proxy = self.proxy
        proxy.seen.append(sql)
        with self._lock:
            self.texts[request] = sql
            if request in self.watches:
                return  # one fault per request
            for rule in proxy._rules:
                if rule.left and proxy._check(rule.predicate, sql):
                    decided = not rule.at_commit and rule.replied is None
                    if decided:
                        rule.fired += 1
                    self.watches[request] = _Watch(rule, sql, decided)
                    return

    # server -> client

    def _downstream(self) -> None:
        buf = bytearray()
        held: list[bytes] = []  # the reply being awaited, kept from the client until it is decided
        sql = ""
        while chunk := self.server.recv(65536):
            buf += chunk
            out = bytearray()
            while len(buf) >= 5:
                size = struct.unpack_from("!I", buf, 1)[0] + 1
                if len(buf) < size:
                    break
                message = bytes(buf[:size])
                del buf[:size]
                ready = message[:1] == b"Z"
                with self._lock:
                    request = self.replies
                    holding = request in self.watches or self.commit_watch is not None
                    if ready:
                        self.replies += 1
                        sql = self.texts.pop(request, "")
                if not holding:
                    out += message
                    continue
                held.append(message)
                if not ready:
                    continue
                reply, held = b"".join(held), []
                cut = self._decide(request, sql, reply, in_transaction=message[5:6] != b"I")
                if cut is None:
                    out += reply
                    continue
                self._send(self.client, out)
                self.close()
                self.proxy._record(cut)
                return
            self._send(self.client, out)

    def _decide(self, request: int, sql: str, reply: bytes, in_transaction: bool) -> Cut | None:
        """The whole reply to ``request`` (``sql``) is in: cut now, or let it through."""
        proxy = self.proxy
        text = reply.decode("utf-8", "replace")
        with self._lock:
            watch = self.watches.pop(request, None)
            if watch is not None:
                rule = watch.rule
                if watch.decided:
                    return Cut(sql, watch.sql, text)
                if rule.left and (rule.replied is None or proxy._check(rule.replied, text)):
                    if not (rule.at_commit and in_transaction):
                        rule.fired += 1
                        return Cut(sql, watch.sql, text)
                    self.commit_watch = watch
                    return None
            if self.commit_watch is not None and not in_transaction:
                watch, self.commit_watch = self.commit_watch, None
                if watch.rule.left:
                    watch.rule.fired += 1
                    return Cut(sql, watch.sql, text)
        return None


def _bound(sql: str, data: bytes) -> str:
    """``sql`` with the values of a Bind message's body (after its two names) in place of ``$n``."""
    (count,) = struct.unpack_from("!h", data, 0)
    formats = struct.unpack_from(f"!{count}h", data, 2)
    offset = 2 + 2 * count
    (params,) = struct.unpack_from("!h", data, offset)
    offset += 2
    values = []
    for i in range(params):
        (size,) = struct.unpack_from("!i", data, offset)
        offset += 4
        if size < 0:
            values.append("NULL")
            continue
        raw = data[offset:offset + size]
        offset += size
        binary = (formats[i] if count > 1 else formats[0] if count else 0) == 1
        if not binary:
            values.append("'" + raw.decode("utf-8", "replace").replace("'", "''") + "'")
        elif size == 16:
            values.append(f"'{uuid.UUID(bytes=raw)}'")
        elif size in (2, 4, 8):
            values.append(str(int.from_bytes(raw, "big", signed=True)))
        else:
            values.append("'\\x" + raw.hex() + "'")
    return re.sub(r"\$(\d+)", lambda m: values[int(m[1]) - 1] if int(m[1]) <= len(values) else m[0], sql)


def _cstring(data: bytes) -> str:
    return data.partition(b"\0")[0].decode("utf-8", "replace")


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
