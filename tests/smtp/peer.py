#!/usr/bin/python3
"""A real SMTP peer for contactplan's integration tests, with fault injection.

Built on aiosmtpd's Controller (Debian: python3-aiosmtpd; run it with /usr/bin/python3).
Listens on loopback only. Prints nothing per message; errors go to stderr.

    /usr/bin/python3 tests/smtp/peer.py --port 0 --ready-file DIR/port --record DIR/rec.jsonl

Flags (all optional, combinable):
  --host H               listen address (loopback only; default 127.0.0.1)
  --port N               port; 0 picks a free one (default 0)
  --ready-file PATH      once listening, write the actual port here (tmp + rename)
  --record PATH          append one JSON line per message accepted with 250:
                         {"message_id","rcpt","mail_from","size","seq","pipelined"}
                         ("pipelined": more commands had arrived with MAIL FROM)
  --dropped PATH         same format, for messages cut by --drop-after-data
  --tls-cert/--tls-key   certificate and key (PEM); enables STARTTLS
  --self-signed DIR      use DIR/cert.pem + DIR/key.pem, creating them with the
                         openssl CLI (CN=localhost, SAN DNS:localhost,IP:127.0.0.1)
                         when missing; enables STARTTLS like --tls-cert/--tls-key
  --require-starttls     530 for MAIL etc. before STARTTLS
  --implicit-tls         TLS from the first byte (port 465 style), same cert/key
  --auth USER:PASS       advertise AUTH PLAIN LOGIN, require it (530 before auth),
                         accept only these credentials (535 otherwise). AUTH is
                         offered only over TLS (STARTTLS or implicit) unless
                         --auth-plaintext-ok is given.
  --auth-plaintext-ok    allow AUTH over a plaintext connection
  --xoauth2 USER:PATH    advertise AUTH XOAUTH2 (instead of PLAIN/LOGIN unless --auth
                         is given too) and require it: accept user USER with a bearer
                         token listed in PATH (one per line, re-read at every AUTH: the
                         test keeps only the currently valid tokens there). A refused
                         token gets Google's answer: "334 <base64 JSON status>", then
                         "535 5.7.8" after the client's empty line. Every attempt is
                         appended to PATH.log as JSON {"user","ok"}; records of
                         messages sent on such a session carry "auth": "XOAUTH2:USER".
  --refuse-for SECONDS   for SECONDS after becoming ready, close every new
                         connection at once without a byte (server down)
  --greet-421 N          the first N connections (after any refused ones) get
                         "421 4.3.2 service not available" at greeting, then close
  --defer-every K        every K-th message (DATA count) gets "451 4.3.0 temporary
                         failure" at end of DATA (not recorded)
  --drop-after-data L    comma-separated 1-based DATA numbers: read the whole
                         message, record it in --dropped, then cut the TCP
                         connection (RST) with no reply
  --reject-rcpt SUB      (repeatable) RCPT addresses containing SUB get
                         "550 5.1.1 mailbox unavailable"
  --stall-after-data L   comma-separated 1-based DATA numbers: read the whole
                         message, record it in --dropped, then never reply (the
                         connection stays open until the client goes away)
  --pipelining           announce PIPELINING (RFC 2920) in the EHLO reply; commands
                         are read and answered in order either way
  --record-content       add "content" (the message as received, dot-unstuffed,
                         decoded as UTF-8) to every --record line

DATA numbering ("seq") counts every message that reached end of DATA, whatever
its fate; --drop-after-data takes precedence over --defer-every for the same seq.
SIGTERM / SIGINT stop the server cleanly (exit status 0).
"""

import argparse
import asyncio
import email.parser
import email.policy
import ipaddress
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import warnings

from aiosmtpd.controller import Controller
from base64 import b64decode, b64encode

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

DATA_OK = "250 2.0.0 OK: queued"
DEFERRED = "451 4.3.0 temporary failure"
GREET_421 = "421 4.3.2 service not available"
RCPT_REJECTED = "550 5.1.1 mailbox unavailable"

_header_parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def log_err(msg):
    sys.stderr.write(f"peer.py: {msg}\n")
    sys.stderr.flush()


class JsonLines:
    """Appends JSON lines to a file, flushed after each line. None path = discard."""

    def __init__(self, path):
        self._f = open(path, "a", encoding="utf-8") if path else None

    def write(self, obj):
        if self._f is None:
            return
        self._f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self):
        if self._f is not None:
            self._f.close()


class State:
    """Counters shared by all sessions. Only touched from the event-loop thread
    (except `armed`/`armed_at`, set once by the main thread before the ready file)."""

    def __init__(self, args):
        self.args = args
        self.armed = False
        self.armed_at = 0.0
        self.connections = 0
        self.greeted_421 = 0
        self.data_seq = 0
        self.drop_set = set(args.drop_after_data)
        self.stall_set = set(args.stall_after_data)
        self.record = JsonLines(args.record)
        self.dropped = JsonLines(args.dropped)

    def connection_fate(self):
        """'ok', 'refuse' or 'greet421' for a new connection."""
        if not self.armed:
            # aiosmtpd's own start-up probe connection: never a fault.
            return "ok"
        self.connections += 1
        a = self.args
        if a.refuse_for and time.monotonic() - self.armed_at < a.refuse_for:
            return "refuse"
        if self.greeted_421 < a.greet_421:
            self.greeted_421 += 1
            return "greet421"
        return "ok"


def message_id_of(content):
    try:
        headers = _header_parser.parsebytes(content)
        mid = headers.get("Message-ID")
        return str(mid).strip() if mid is not None else ""
    except Exception as e:  # a peer must never die on a weird message
        log_err(f"cannot parse headers: {e!r}")
        return ""


class Handler:
    def __init__(self, state):
        self.state = state

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # With this hook aiosmtpd leaves remembering the name to us.
        session.host_name = hostname
        if self.state.args.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # Commands that arrived with MAIL, before its reply was sent: the client pipelines.
        envelope.pipelined = bool(getattr(server._reader, "_buffer", b""))
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        for sub in self.state.args.reject_rcpt:
            if sub in address:
                return RCPT_REJECTED
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        st = self.state
        st.data_seq += 1
        seq = st.data_seq
        content = envelope.original_content or b""
        rec = {
            "message_id": message_id_of(content),
            "rcpt": list(envelope.rcpt_tos),
            "mail_from": envelope.mail_from or "",
            "size": len(content),
            "seq": seq,
            "pipelined": getattr(envelope, "pipelined", False),
        }
        rec["auth"] = getattr(session, "xoauth2_auth", "")
        if st.args.record_content:
            rec["content"] = content.decode("utf-8", "replace")
        if seq in st.drop_set:
            st.dropped.write(rec)
            # Cut the connection without a reply. connection_lost() cancels this
            # session's task, which ends the wait below.
            transport = server.transport
            if transport is not None:
                transport.abort()
            await asyncio.Event().wait()
            return "421 unreachable"  # pragma: no cover
        if seq in st.stall_set:
            st.dropped.write(rec)
            # No reply, ever: the client's outcome stays unknown until it gives up or dies.
            await asyncio.Event().wait()
        k = st.args.defer_every
        if k and seq % k == 0:
            return DEFERRED
        st.record.write(rec)
        return DATA_OK

    async def handle_exception(self, error):
        log_err(f"session exception: {error!r}")
        return "500 Error: ({}) {}".format(error.__class__.__name__, error)


class XOAuth2Handler(Handler):
    """Handler with the SASL XOAUTH2 mechanism (aiosmtpd finds `auth_*` methods on it)."""

    async def auth_XOAUTH2(self, server, args):
        user, _, path = self.state.args.xoauth2.partition(":")
        if len(args) == 2:
            try:
                raw = b64decode(args[1].encode(), validate=True)
            except Exception:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            raw = await server.challenge_auth("")
            if not isinstance(raw, bytes):
                return AuthResult(success=False)
        parts = raw.split(b"\x01")
        got_user = parts[0][len(b"user="):].decode("utf-8", "replace") if parts[0].startswith(b"user=") else None
        token = None
        if len(parts) == 4 and parts[2:] == [b"", b""] and parts[1].startswith(b"auth=Bearer "):
            token = parts[1][len(b"auth=Bearer "):].decode("ascii", "replace")
        try:
            with open(path, encoding="utf-8") as f:
                valid = {line.strip() for line in f if line.strip()}
        except FileNotFoundError:
            valid = set()
        ok = got_user == user and token is not None and token in valid
        with open(path + ".log", "a", encoding="utf-8") as f:
            f.write(json.dumps({"user": got_user or "", "ok": ok}) + "\n")
        if ok:
            server.session.xoauth2_auth = f"XOAUTH2:{got_user}"
            return AuthResult(success=True, auth_data=LoginPassword(got_user.encode(), b""))
        status = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"})
        await server.challenge_auth(b64encode(status.encode()).decode(), encode_to_b64=False)
        return AuthResult(success=False, handled=False, message="535 5.7.8 Username and Password not accepted")


class Refuser(asyncio.Protocol):
    """Closes the connection as soon as it is made."""

    def connection_made(self, transport):
        transport.close()


class FaultySMTP(SMTP):
    def __init__(self, *a, greet_421=False, **kw):
        super().__init__(*a, **kw)
        self._greet_421 = greet_421

    async def _handle_client(self):
        if self._greet_421:
            await self.push(GREET_421)
            self.transport.close()
            return
        await super()._handle_client()


class PeerController(Controller):
    def __init__(self, state, handler, **kw):
        super().__init__(handler, **kw)
        self.state = state

    def factory(self):
        fate = self.state.connection_fate()
        if fate == "refuse":
            return Refuser()
        return FaultySMTP(self.handler, greet_421=(fate == "greet421"), **self.SMTP_kwargs)

    def _trigger_server(self):
        # With --port 0, learn the real port before aiosmtpd's probe connects.
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def ensure_self_signed(d):
    os.makedirs(d, exist_ok=True)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    if os.path.exists(cert) and os.path.exists(key):
        return cert, key
    cnf = os.path.join(d, f"openssl.{os.getpid()}.cnf")
    with open(cnf, "w") as f:
        # An end-entity cert (CA:FALSE): rustls/webpki refuses a CA cert as server cert.
        f.write(
            "[req]\n"
            "distinguished_name = dn\n"
            "x509_extensions = v3\n"
            "prompt = no\n"
            "[dn]\n"
            "CN = localhost\n"
            "[v3]\n"
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyEncipherment\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectAltName = DNS:localhost, IP:127.0.0.1\n"
            "subjectKeyIdentifier = hash\n"
        )
    tmp_cert, tmp_key = f"{cert}.{os.getpid()}.tmp", f"{key}.{os.getpid()}.tmp"
    try:
        r = subprocess.run(
            [
                "openssl", "req", "-x509", "-config", cnf,
                "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "3650", "-keyout", tmp_key, "-out", tmp_cert,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if r.returncode != 0:
            raise SystemExit(f"peer.py: openssl failed: {r.stderr.strip()}")
        os.replace(tmp_key, key)
        os.replace(tmp_cert, cert)
    finally:
        for p in (cnf, tmp_cert, tmp_key):
            if os.path.exists(p):
                os.unlink(p)
    return cert, key


def write_atomically(path, text):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def parse_seq_list(s):
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {s!r}")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ready-file")
    p.add_argument("--record")
    p.add_argument("--dropped")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--self-signed", metavar="DIR")
    p.add_argument("--require-starttls", action="store_true")
    p.add_argument("--implicit-tls", action="store_true")
    p.add_argument("--auth", metavar="USER:PASS")
    p.add_argument("--auth-plaintext-ok", action="store_true")
    p.add_argument("--xoauth2", metavar="USER:PATH")
    p.add_argument("--refuse-for", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--greet-421", type=int, default=0, metavar="N")
    p.add_argument("--defer-every", type=int, default=0, metavar="K")
    p.add_argument("--drop-after-data", type=parse_seq_list, default=[], metavar="LIST")
    p.add_argument("--stall-after-data", type=parse_seq_list, default=[], metavar="LIST")
    p.add_argument("--reject-rcpt", action="append", default=[], metavar="SUBSTRING")
    p.add_argument("--pipelining", action="store_true")
    p.add_argument("--record-content", action="store_true")
    a = p.parse_args(argv)
    try:
        if not ipaddress.ip_address(a.host).is_loopback:
            p.error(f"--host {a.host} is not a loopback address")
    except ValueError:
        if a.host != "localhost":
            p.error(f"--host {a.host} is not a loopback address")
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if a.self_signed and a.tls_cert:
        p.error("--self-signed and --tls-cert/--tls-key exclude each other")
    if a.auth is not None and ":" not in a.auth:
        p.error("--auth wants USER:PASS")
    if a.xoauth2 is not None and ":" not in a.xoauth2:
        p.error("--xoauth2 wants USER:PATH")
    if a.defer_every < 0 or a.greet_421 < 0 or a.refuse_for < 0:
        p.error("negative counts make no sense")
    return a


def main(argv):
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.ERROR, format="peer.py: %(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    # aiosmtpd warns (per session) when AUTH is allowed without TLS; that is on purpose here.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")

    if args.self_signed:
        args.tls_cert, args.tls_key = ensure_self_signed(args.self_signed)
    tls_ctx = None
    if args.tls_cert:
        tls_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_ctx.load_cert_chain(args.tls_cert, args.tls_key)
    if (args.implicit_tls or args.require_starttls) and tls_ctx is None:
        raise SystemExit("peer.py: --implicit-tls/--require-starttls need --tls-cert/--tls-key or --self-signed")

    state = State(args)
    kw = dict(
        hostname=args.host,
        port=args.port,
        server_hostname="localhost",  # skips getfqdn() per session
        ready_timeout=15.0,
        data_size_limit=64 * 1024 * 1024,
    )
    if args.implicit_tls:
        kw["ssl_context"] = tls_ctx
    elif tls_ctx is not None:
        kw["tls_context"] = tls_ctx
        kw["require_starttls"] = args.require_starttls
    if args.auth is not None:
        user, _, password = args.auth.partition(":")
        want = LoginPassword(user.encode(), password.encode())

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data == want
            return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

        kw["authenticator"] = authenticator
        kw["auth_required"] = True
        # aiosmtpd only counts STARTTLS as TLS; an implicit-TLS socket is TLS too.
        kw["auth_require_tls"] = not (args.auth_plaintext_ok or args.implicit_tls)
    elif args.auth_plaintext_ok:
        kw["auth_require_tls"] = False
    handler = Handler(state)
    if args.xoauth2 is not None:
        handler = XOAuth2Handler(state)
        kw["auth_required"] = True
        kw["auth_require_tls"] = not (args.auth_plaintext_ok or args.implicit_tls)
        if args.auth is None:
            kw["auth_exclude_mechanism"] = ["PLAIN", "LOGIN"]

    controller = PeerController(state, handler, **kw)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    controller.start()
    state.armed_at = time.monotonic()
    state.armed = True
    if args.ready_file:
        write_atomically(args.ready_file, f"{controller.port}\n")
    while not stop.wait(3600):
        pass
    controller.stop()
    state.record.close()
    state.dropped.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
