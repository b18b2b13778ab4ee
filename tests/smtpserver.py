"""A real SMTP server (aiosmtpd) on 127.0.0.1 for tests and benchmarks, scriptable to misbehave.

`with SmtpServer() as srv:` gives `srv.host`, `srv.port`, `srv.messages` (what the server accepted,
with envelope and parsed message) and `srv.connections` (TCP connections accepted since `start()`, so a
test can check that a batch reused one connection). Scripting (`srv.script`): defer the first N transactions with 451,
reject recipients with 550, drop the connection at the k-th MAIL/RCPT/DATA, or call a hook there (the
kill tests SIGKILL the sending process from it). Never listens anywhere but loopback.

TLS (`tls_context=` STARTTLS, required before anything else; `ssl_context=` implicit TLS from the first byte)
with `credentials=` requires AUTH over TLS. Each `Received` notes the TLS version and login in force at its
MAIL FROM, and `srv.logins` lists every AUTH attempt, so tests can check that nothing travelled in the clear.
"""

from __future__ import annotations

import email
import email.policy
import ssl
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Callable

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: str | None = None
    """TLS version of the connection at MAIL FROM ('TLSv1.3'...); None: plain text."""
    login: str | None = None
    """User authenticated at MAIL FROM; None: no AUTH."""

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


@dataclass(frozen=True)
class Login:
    """One AUTH attempt as the server saw it."""

    user: str
    accepted: bool
    tls: str | None
    """TLS version of the connection during AUTH; None: the password travelled in plain text."""


def _tls_version(server) -> str | None:
    """TLS version of an aiosmtpd connection (STARTTLS or implicit), None when it is plain text."""
    transport = server.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    return ssl_object.version() if ssl_object is not None else None


@dataclass
class Script:
    defer_first: int = 0
    """Answer 451 to the DATA of the first N transactions."""
    defer_rcpt_first: int = 0
    """Answer 451 to the RCPT of the first N transactions."""
    reject: set[str] = field(default_factory=set)
    """Recipients answered 550 at RCPT."""
    reject_data: set[str] = field(default_factory=set)
    """Recipients whose message is answered 554 after DATA."""
    drop_at: tuple[str, int] | None = None
    """('MAIL'|'RCPT'|'DATA', k): close the connection without answering the k-th such command (1-based)."""
    hook_at: tuple[str, int] | None = None
    """('MAIL'|'RCPT'|'DATA', k): call `hook` there, before answering (for DATA, after the message is kept)."""
    hook: Callable[[], None] | None = None


class _Handler:
    def __init__(self, owner: "SmtpServer") -> None:
        self.owner = owner

    def _count(self, stage: str) -> int:
        with self.owner.lock:
            self.owner.counts[stage] = self.owner.counts.get(stage, 0) + 1
            return self.owner.counts[stage]

    def _act(self, server, stage: str, n: int) -> bool:
        """Run the scripted hook or drop at this point; True when the connection was dropped."""
        script = self.owner.script
        if script.hook_at == (stage, n) and script.hook:
            script.hook()
        if script.drop_at == (stage, n):
            server.transport.abort()
            return True
        return False

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        n = self._count("MAIL")
        if self._act(server, "MAIL", n):
            return "421 4.3.0 dropped"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.veille_tls = _tls_version(server)
        envelope.veille_login = getattr(session, "veille_login", None)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        n = self._count("RCPT")
        if self._act(server, "RCPT", n):
            return "421 4.3.0 dropped"
        script = self.owner.script
        if address.lower() in {r.lower() for r in script.reject}:
            return "550 5.1.1 No such user here"
        if n <= script.defer_rcpt_first:
            return "451 4.3.2 Please try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = self._count("DATA")
        script = self.owner.script
        if script.drop_at == ("DATA", n):
            server.transport.abort()
            return "421 4.3.0 dropped"
        if n <= script.defer_first:
            return "451 4.7.1 Greylisted, please try again later"
        if any(r.lower() in {x.lower() for x in script.reject_data} for r in envelope.rcpt_tos):
            return "554 5.7.1 Message rejected as spam"
        with self.owner.lock:
            self.owner.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                                                getattr(envelope, "veille_tls", None),
                                                getattr(envelope, "veille_login", None)))
        if script.hook_at == ("DATA", n) and script.hook:
            script.hook()
        return "250 2.0.0 Message accepted"


class _LoopbackController(Controller):
    """aiosmtpd's Controller bound to a free port chosen by the kernel (port 0), on 127.0.0.1 only.

    `factory()` builds one SMTP protocol per accepted connection: it counts them in `owner.connections`.
    """

    def __init__(self, owner: "SmtpServer", *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner

    def factory(self):
        with self.owner.lock:
            self.owner.connections += 1
        return super().factory()

    def _create_server(self):
        async def create():
            server = await self.loop.create_server(self._factory_invoker, host=self.hostname, port=0,
                                                   ssl=self.ssl_context)
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()


class SmtpServer:
    """`credentials=(user, password)` requires AUTH (PLAIN/LOGIN, allowed without TLS on loopback).

    `tls_context=` (a server-side SSLContext) offers STARTTLS and requires it before MAIL and AUTH;
    `ssl_context=` speaks TLS from the first byte (SMTPS). With either, AUTH is accepted only over TLS.
    """

    def __init__(self, script: Script | None = None, credentials: tuple[str, str] | None = None, *,
                 tls_context: ssl.SSLContext | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        if tls_context is not None and ssl_context is not None:
            raise ValueError("STARTTLS (tls_context) or implicit TLS (ssl_context), not both")
        self.script = script or Script()
        self.messages: list[Received] = []
        self.logins: list[Login] = []
        self.counts: dict[str, int] = {}
        self.connections = 0
        """SMTP connections accepted since `start()` (aiosmtpd's own start-up probe not included)."""
        self.lock = threading.Lock()
        self.tls_mode = "starttls" if tls_context is not None else "ssl" if ssl_context is not None else "none"
        auth: dict = {}
        if credentials:
            def authenticator(server, session, envelope, mechanism, data):
                ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == credentials
                tls = _tls_version(server)
                user = data.login.decode(errors="replace") if isinstance(data, LoginPassword) else ""
                with self.lock:
                    self.logins.append(Login(user, ok, tls))
                if ok:
                    session.veille_login = user
                return AuthResult(success=ok, handled=False)

            # aiosmtpd 1.4 only knows TLS it negotiated itself (STARTTLS): under implicit TLS its own check
            # would refuse AUTH (aio-libs/aiosmtpd#281), so there the whole connection is TLS and it is off.
            auth = {"authenticator": authenticator, "auth_required": True,
                    "auth_require_tls": tls_context is not None}
        if tls_context is not None:
            auth.update(tls_context=tls_context, require_starttls=True)
        self._controller = _LoopbackController(self, _Handler(self), hostname="127.0.0.1", port=0,
                                               data_size_limit=10_000_000, ssl_context=ssl_context, **auth)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self._controller.port

    def env(self) -> dict[str, str]:
        """VEILLE_* variables pointing a veille process at this server."""
        return {"VEILLE_SMTP_HOST": self.host, "VEILLE_SMTP_PORT": str(self.port), "VEILLE_SMTP_TLS": self.tls_mode}

    def by_recipient(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = {}
        with self.lock:
            for m in self.messages:
                for r in m.rcpt_tos:
                    out.setdefault(r.lower(), []).append(m)
        return out

    def start(self) -> "SmtpServer":
        self._controller.start()
        # aiosmtpd's start() opens a probe connection and returns only after factory() ran for it
        # (it waits on its _factory_invoked event): the probe is counted by now, and forgotten here.
        with self.lock:
            self.connections = 0
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> "SmtpServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["SmtpServer", "Script", "Received", "Login"]


def _serve_until_stdin_closes() -> None:
    """`python -m tests.smtpserver`: print the port, serve until stdin closes, then print the counts as JSON.

    Lets a benchmark run the server in its own process, so the sender is not slowed by the server's
    parsing under the same GIL.
    """
    import json
    import sys

    with SmtpServer() as server:
        print(server.port, flush=True)
        sys.stdin.read()
        counts = {r: len(m) for r, m in server.by_recipient().items()}
    print(json.dumps({"messages": len(server.messages), "recipients": counts}), flush=True)


if __name__ == "__main__":
    _serve_until_stdin_closes()
