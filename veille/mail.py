"""Mail stage: one email per member and week, sent over SMTP exactly once, or written to the outbox.

`render_email` turns a `MemberDigest` into a multipart/alternative message (plain text + HTML with
inlined CSS). `deliver_week` builds the week's digest, writes its archive folder and serves every
active member: over SMTP when `send` and an SMTP host are configured, else as `.eml` files in
`digests/YYYY-Www/outbox/`.

Exactly once. The deliveries table holds one row per (week, member). Before the DATA command the row
is committed as 'sending'; after the server's 250 it becomes 'sent'. A 4xx is retried with backoff
within the run, then left 'failed' (the next run retries it); a 5xx makes it 'bounced' (never retried
automatically). A row still 'sending' after a crash is ambiguous: the server may have accepted the
message before the process died. Such members are skipped and reported as *uncertain*, never resent
silently; `retry_uncertain=True` (`veille digest --send --retry-uncertain`) sends them again after the
operator checked the mail server's log, with the same Message-ID so the duplicate is recognisable.
"""

from __future__ import annotations

import binascii
import email.policy
import hashlib
import html
import re
import smtplib
import ssl
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from .config import Settings, check_public_url
from .digest import (
    PARIS,
    Digest,
    MemberDigest,
    build_digest,
    clean_text,
    member_digest,
    plural,
    render,
    safe_url,
    templates,
    write_atomic,
    write_digest,
)
from .errors import ConfigError, MailError
from .types import Source

if TYPE_CHECKING:
    from .store import Store
    from .store.members import Member

SMTP_TIMEOUT = 60.0
RETRIES = 3
"""4xx answers retried this many times per member within a run (then 'failed', retried next run)."""
BACKOFF = 2.0
"""Seconds before the first retry; doubled each time."""
GIVE_UP_AFTER = 3
"""Members in a row that still get 4xx after their retries: the server is unwell, stop the batch."""

# The layout is rendered once per digest with these markers where member-specific text goes.
_GREETING = "veille-marker-greeting-8c1f2b"
_COUNT = "veille-marker-count-8c1f2b"
_PREHEADER = "veille-marker-preheader-8c1f2b"
_EMAIL = "veille-marker-email-8c1f2b"
_UNSUBSCRIBE = "veille-marker-unsubscribe-8c1f2b"
_BODY = "veille-marker-body-8c1f2b"


# --------------------------------------------------------------------------------------------------
# Rendering


def unsubscribe_url(settings: Settings, member: "Member") -> str:
    """One-click unsubscribe endpoint (RFC 8058): POST, or GET for a confirmation page, at the public site.

    https only (plain http on a loopback host, for tests and the demo): see `check_public_url_setting`.
    """
    base = check_public_url_setting(settings)
    url = safe_url(f"{base.rstrip('/')}/unsubscribe/{member.unsubscribe_token}")
    if url is None:
        raise ConfigError("settings", None, "public_url", f"{settings.public_url!r} is not an http(s) URL",
                          _PUBLIC_URL_HINT)
    return url


_PUBLIC_URL_HINT = "set VEILLE_PUBLIC_URL (or public_url in veille.yaml) to e.g. https://veille.association.fr"


@lru_cache(maxsize=16)
def _checked_public_url(value: str) -> str:
    try:
        return check_public_url(value)
    except ValueError as e:
        raise ConfigError("settings", None, "public_url", str(e), _PUBLIC_URL_HINT) from None


def check_public_url_setting(settings: Settings) -> str:
    """`settings.public_url`, checked again here: Settings built with `.replace()` skip load_settings' parser.

    Raises `ConfigError` (key `public_url`) for anything but https, or http on 127.0.0.1/localhost/::1.
    """
    return _checked_public_url(settings.public_url)


def sender(settings: Settings) -> Address:
    """The From address: `mail_from` (an address, or `Name <address>`), named after the organisation."""
    return _sender(settings.mail_from, settings.organisation)


@lru_cache(maxsize=16)
def _sender(mail_from: str, organisation: str) -> Address:
    name, addr = parseaddr(mail_from)
    try:
        local, _, domain = addr.partition("@")
        if not local or not domain:
            raise ValueError
        return Address(display_name=clean_text(name or organisation), addr_spec=addr)
    except (ValueError, IndexError) as e:
        raise ConfigError("settings", None, "mail_from", f"{mail_from!r} is not an email address",
                          "set VEILLE_MAIL_FROM (or mail_from in veille.yaml) to e.g. veille@association.fr") from e


@lru_cache(maxsize=16)
def _reply_to(value: str) -> Address:
    name, addr = parseaddr(value)
    try:
        if "@" not in addr:
            raise ValueError
        return Address(display_name=clean_text(name), addr_spec=addr)
    except (ValueError, IndexError) as e:
        raise ConfigError("settings", None, "reply_to", f"{value!r} is not an email address",
                          "set VEILLE_REPLY_TO (or reply_to in veille.yaml) to e.g. contact@association.fr") from e


def message_id(week: str, member: "Member", settings: Settings) -> str:
    """Stable per (week, member): a forced resend carries the same id, so clients can spot the duplicate."""
    domain = sender(settings).domain
    if not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
        domain = "veille.invalid"
    token = hashlib.sha256(f"{week}\0{member.id}\0{member.email.lower()}".encode()).hexdigest()[:16]
    return f"<veille.{week}.{member.id}.{token}@{domain}>"


def _text_part(encoded: str, subtype: str) -> EmailMessage:
    """A UTF-8 quoted-printable part from an already encoded body (binascii, not email's Python encoder)."""
    part = EmailMessage(policy=_POLICY)
    part.set_payload(encoded)
    part["Content-Type"] = _header("Content-Type", f'text/{subtype}; charset="utf-8"')
    part["Content-Transfer-Encoding"] = _header("Content-Transfer-Encoding", "quoted-printable")
    return part


class _Renderer:
    """Renders the emails of one digest from cached blocks.

    The layout (templates/email.html) is rendered and CSS-inlined once, with markers for what differs
    per member; each block of _blocks.html (a story, a section heading) is rendered, inlined and
    quoted-printable encoded once, and reused for every member who gets it. A member's email is then
    a join, not a template run: 2,000 members cost about as much as their distinct stories.
    Quoted-printable works line by line, and every piece ends a line, so encoding the pieces apart
    gives the bytes of encoding the whole.
    """

    def __init__(self, digest: Digest, settings: Settings) -> None:
        import css_inline

        env = templates()
        self.digest = digest
        self.organisation = clean_text(settings.organisation)
        self.html_blocks = env.get_template("_blocks.html").module
        self.text_blocks = env.get_template("_blocks.txt").module
        self.css = render("email.css")
        context = {
            "d": digest, "organisation": self.organisation, "css": self.css, "preheader": _PREHEADER,
            "greeting": _GREETING, "count_text": _COUNT, "member_email": _EMAIL,
            "unsubscribe_url": _UNSUBSCRIBE, "body": _BODY,
        }
        layout = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False).inline(
            render("email.html", **context))
        self.layouts = {"html": _split_layout(layout), "text": _split_layout(render("email.txt", **context))}
        self._inliner = css_inline.CSSInliner(load_remote_stylesheets=False)
        self._blocks: dict[tuple, dict[str, tuple[str, str]]] = {}

    def _block(self, key: tuple, name: str, *args: Any) -> dict[str, tuple[str, str]]:
        """{"html"|"text": (block, its quoted-printable encoding)}, built once per key."""
        block = self._blocks.get(key)
        if block is None:
            html = self._inliner.inline_fragment(str(getattr(self.html_blocks, name)(*args)), self.css)
            html = _CLASS.sub(_keep_media_classes, html).rstrip("\n") + "\n"
            text = str(getattr(self.text_blocks, name)(*args))
            text = text if text.endswith("\n") else text + "\n"
            block = self._blocks[key] = {"html": (html, _qp(html)), "text": (text, _qp(text))}
        return block

    def _member_blocks(self, md: MemberDigest) -> list[dict[str, tuple[str, str]]]:
        blocks = []
        if md.headlines:
            blocks.append(self._block(("headlines",), "headlines_head"))
        for section, entries in ((None, md.headlines), *((s, s.entries) for s in md.sections)):
            if section is not None:
                blocks.append(self._block(("section", section.topic.id), "section_head", section.section))
            for e in entries:
                blocks.append(self._block(("entry", e.item.key, e.compact, tuple(t.id for t in e.topics)), "entry", e))
            if section is not None and section.more:
                url = f"{self.digest.archive_url}#{section.topic.id}"
                blocks.append(self._block(("more", section.topic.id, section.more), "more", section.more, url))
        return blocks

    def bodies(self, md: MemberDigest) -> tuple[str, str]:
        """(html, text) of the member's email, still with the per-member markers."""
        blocks = self._member_blocks(md)
        html, text = self.layouts["html"], self.layouts["text"]
        return (html[0] + "".join(b["html"][0] for b in blocks) + html[1],
                text[0] + "".join(b["text"][0] for b in blocks) + text[1])

    def encoded(self, md: MemberDigest, values: dict[str, str]) -> tuple[str, str]:
        """(html, text) quoted-printable encoded, personalised with `values` (escaped in the HTML)."""
        blocks = self._member_blocks(md)
        out = []
        for kind, escape in (("html", True), ("text", False)):
            head, tail = (_qp(_personalise(part, values, escape)) for part in self.layouts[kind])
            out.append(head + "".join(b[kind][1] for b in blocks) + tail)
        return out[0], out[1]


def _split_layout(layout: str) -> tuple[str, str]:
    head, found, tail = layout.partition(_BODY)
    if not found or found in tail:
        raise AssertionError("an email layout needs exactly one body slot")
    if not head.endswith("\n"):
        head += "\n"  # the body starts a line (see _Renderer)
    return head, tail


def _qp(text: str) -> str:
    """Quoted-printable with CRLF line ends, as sent on the wire."""
    return binascii.b2a_qp(text.replace("\n", "\r\n").encode("utf-8"), istext=True).decode("ascii")


_CLASS = re.compile(r' class="([^"]*)"')
_MEDIA_CLASSES = {"header", "intro", "section-head", "item", "more", "footer", "title", "outer-cell"}
"""Classes the @media rules of email.css still need once everything else is inlined."""


def _keep_media_classes(m: re.Match) -> str:
    kept = [c for c in m.group(1).split() if c in _MEDIA_CLASSES]
    return f' class="{" ".join(kept)}"' if kept else ""


_renderers: dict[tuple, _Renderer] = {}


def _renderer(digest: Digest, settings: Settings) -> _Renderer:
    key = (id(digest), settings.organisation)
    renderer = _renderers.get(key)
    if renderer is None or renderer.digest is not digest:
        _renderers.clear()  # one digest at a time: the cache lives as long as its delivery run
        renderer = _renderers[key] = _Renderer(digest, settings)
    return renderer


def _personalise(body: str, values: dict[str, str], escape: bool) -> str:
    for marker, value in values.items():
        body = body.replace(marker, html.escape(value) if escape else value)
    return body


def render_email(md: MemberDigest, settings: Settings, *, now: datetime | None = None) -> EmailMessage:
    """The member's email: multipart/alternative (text, then HTML), UTF-8, with the unsubscribe headers.

    Headers are email.headerregistry objects (no CR/LF can get in); those shared by every member of
    the run are parsed once (`_header`), the package's parser being most of the cost of a message.
    """
    member = md.member
    if member is None:
        raise ValueError("render_email needs a member's digest (member_digest), not the archive view")
    name = clean_text(member.name)
    unsubscribe = unsubscribe_url(settings, member)
    html_body, text_body = _renderer(md.digest, settings).encoded(md, _member_values(md, settings))
    from_address = sender(settings)
    mid = message_id(md.digest.week, member, settings)
    msg = EmailMessage(policy=_POLICY)
    msg["Subject"] = _header("Subject", clean_text(md.subject))
    msg["From"] = _header("From", str(from_address))
    msg["To"] = Address(display_name=name, addr_spec=member.email)
    if settings.reply_to:
        msg["Reply-To"] = _header("Reply-To", str(_reply_to(settings.reply_to)))
    msg["Date"] = _header("Date", format_datetime((now or datetime.now(timezone.utc)).astimezone(PARIS)))
    msg["Message-ID"] = mid
    # Set raw and folded at the comma: the email package would otherwise turn a URI longer than a
    # line into an RFC 2047 encoded-word, which no client recognises as List-Unsubscribe.
    msg.set_raw("List-Unsubscribe", f"<mailto:{_unsubscribe_mailto(settings)}?subject=unsubscribe%20"
                                    f"{member.unsubscribe_token}>,\n <{unsubscribe}>")
    msg["List-Unsubscribe-Post"] = _header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    msg["List-Id"] = _header("List-Id", f"<digest.{from_address.domain}>")
    msg["X-Veille-Week"] = _header("X-Veille-Week", md.digest.week)
    msg["MIME-Version"] = _header("MIME-Version", "1.0")
    boundary = "=_veille_" + hashlib.sha256(mid.encode()).hexdigest()[:24]  # "=_" never occurs in QP
    msg["Content-Type"] = f'multipart/alternative; boundary="{boundary}"'
    msg.attach(_text_part(text_body, "plain"))
    msg.attach(_text_part(html_body, "html"))
    return msg


def _member_values(md: MemberDigest, settings: Settings) -> dict[str, str]:
    """What replaces the layout's markers for this member."""
    assert md.member is not None
    name = clean_text(md.member.name)
    return {
        _GREETING: f"Bonjour {name}," if name else "Bonjour,",
        _COUNT: plural(md.article_count, "article"),
        _PREHEADER: md.preheader,
        _EMAIL: md.member.email,
        _UNSUBSCRIBE: unsubscribe_url(settings, md.member),
    }


class _Registry(HeaderRegistry):
    """The standard header registry, minus building a new class at each lookup (it does, and the
    email package looks a header's class up on every assignment)."""

    @lru_cache(maxsize=128)
    def __getitem__(self, name: str) -> Any:
        return super().__getitem__(name)


_POLICY = email.policy.default.clone(header_factory=_Registry())


@lru_cache(maxsize=256)
def _header(name: str, value: Any) -> Any:
    """A parsed header object, reusable in any message (assigning it skips the parser)."""
    return _POLICY.header_factory(name, value)


_WIRE = SMTP_POLICY.clone(refold_source="none")


def message_bytes(msg: EmailMessage) -> bytes:
    """The message as sent on the wire: CRLF line endings, 7-bit clean, raw headers kept as folded.

    A digest (multipart/alternative of quoted-printable parts with a set boundary) is assembled
    directly: the same bytes `as_bytes` gives (a test checks it), without its line-by-line Python loop,
    five times slower on 100 KB bodies. Anything else goes through `as_bytes`.
    """
    boundary = msg.get_boundary()
    parts = list(msg.iter_parts()) if msg.is_multipart() else []
    if not boundary or not parts or msg.preamble or msg.epilogue or any(
            p.is_multipart() or p["Content-Transfer-Encoding"] != "quoted-printable" for p in parts):
        return msg.as_bytes(policy=_WIRE)
    delimiter = b"--" + boundary.encode()
    out = [_headers(msg), b"\r\n"]
    for index, part in enumerate(parts):
        body = part.get_payload()
        if body.count("\n") != body.count("\r\n"):  # not already CRLF throughout (ours are)
            body = body.replace("\r\n", "\n").replace("\n", "\r\n")
        body = body.encode("ascii")
        out += [b"\r\n" if index else b"", delimiter, b"\r\n", _headers(part), b"\r\n", body]
    out += [b"\r\n", delimiter, b"--\r\n"]
    return b"".join(out)


def _headers(msg: EmailMessage) -> bytes:
    return b"".join(_fold(name, value) for name, value in msg.raw_items())


_folded: dict[tuple[str, str, type], bytes] = {}


def _fold(name: str, value: Any) -> bytes:
    """`fold_binary`, remembered for the headers every member shares (From, Subject, Content-Type...)."""
    key = (name, str(value), type(value))
    folded = _folded.get(key)
    if folded is None:
        folded = _WIRE.fold_binary(name, value)
        if len(_folded) < 1024 and name.lower() not in ("to", "message-id", "list-unsubscribe"):
            _folded[key] = folded
    return folded


def _unsubscribe_mailto(settings: Settings) -> str:
    value = parseaddr(settings.unsubscribe_mailto or "")[1] or sender(settings).addr_spec
    if not re.fullmatch(r"[A-Za-z0-9.!#$%&'*+/=^_`{|}~-]+@[A-Za-z0-9.-]+", value):
        raise ConfigError("settings", None, "unsubscribe_mailto", f"{value!r} is not a plain email address",
                          "set VEILLE_UNSUBSCRIBE_MAILTO to an address that handles unsubscriptions")
    return value


# --------------------------------------------------------------------------------------------------
# SMTP


class _Transient(Exception):
    """4xx or a connection lost before DATA: the server did not take the message; retrying is safe."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class _Permanent(_Transient):
    """5xx for this recipient or this message: recorded as bounced."""


class _SenderRefused(_Transient):
    """5xx to MAIL FROM: a configuration problem that would fail every member; stop the batch."""


class _Uncertain(_Transient):
    """The connection died during DATA: the server may or may not have accepted the message."""


class _Unreachable(_Transient):
    """No connection to the server at all: stop the batch, nothing was sent to anyone still pending."""


def _reply(code: int, text: bytes | str) -> str:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"{code} {clean_text(text)}"


class SmtpSession:
    """One SMTP connection reused for the batch, reopened when the server drops it, paced to `smtp_rate`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = settings.smtp_host or ""
        self.port = settings.smtp_port or {"ssl": 465, "starttls": 587}.get(settings.smtp_tls, 25)
        self.smtp: smtplib.SMTP | None = None
        self._interval = 1.0 / settings.smtp_rate
        self._last = 0.0

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.smtp_tls == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=SMTP_TIMEOUT,
                                                      context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=SMTP_TIMEOUT)
            smtp.ehlo()
            if s.smtp_tls == "starttls":
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password or "")
        except smtplib.SMTPAuthenticationError as e:
            raise _SenderRefused(f"the SMTP server {self.where} refused the login {s.smtp_user!r}: "
                                 f"{_reply(e.smtp_code, e.smtp_error)}; check VEILLE_SMTP_USER and "
                                 "VEILLE_SMTP_PASSWORD", e.smtp_code) from e
        except ssl.SSLCertVerificationError as e:  # before OSError: its generic hint points at the wrong settings
            why = (e.verify_message or str(e)).rstrip(".")
            raise _Unreachable(f"the SMTP server {self.where} presented a TLS certificate that is not trusted "
                               f"(certificate verify failed: {why}); VEILLE_SMTP_HOST must be a name the "
                               "certificate lists, and a certificate from a private CA needs SSL_CERT_FILE "
                               "pointing at that CA's PEM file") from e
        except (OSError, smtplib.SMTPException) as e:
            raise _Unreachable(f"cannot talk to the SMTP server {self.where}: {e or type(e).__name__}; check "
                             "VEILLE_SMTP_HOST, VEILLE_SMTP_PORT and VEILLE_SMTP_TLS") from e
        self.smtp = smtp
        return smtp

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (OSError, smtplib.SMTPException):
                self.smtp.close()
            self.smtp = None

    def _drop(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.close()
            except OSError:
                pass
            self.smtp = None

    def _rset(self) -> None:
        try:
            assert self.smtp is not None
            self.smtp.rset()
        except (OSError, smtplib.SMTPException, AssertionError):
            self._drop()

    def _pace(self) -> None:
        wait = self._last + self._interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last = time.monotonic()

    def _fail(self, code: int, text: bytes | str, stage: str, permanent: type[_Transient]) -> None:
        detail = f"{stage}: {_reply(code, text)}"
        if code == 421:
            self._drop()
        else:
            self._rset()
        if 400 <= code < 500:
            raise _Transient(detail, code)
        raise permanent(detail, code)

    def send(self, from_addr: str, to_addr: str, data: bytes, claim: Callable[[], bool]) -> bool:
        """One transaction; `claim` (the 'sending' commit) runs after RCPT and before DATA.

        Returns False when `claim` declined (someone else holds the delivery). Raises `_Transient`
        (retry), `_Permanent` (bounce), `_SenderRefused` (stop) or `_Uncertain` (leave it 'sending').
        """
        self._pace()
        smtp = self.smtp or self.connect()
        try:
            code, text = smtp.mail(from_addr)
            if code != 250:
                self._fail(code, text, "MAIL FROM", _SenderRefused)
            code, text = smtp.rcpt(to_addr)
            if code not in (250, 251):
                self._fail(code, text, "RCPT TO", _Permanent)
        except (OSError, smtplib.SMTPServerDisconnected) as e:
            self._drop()
            raise _Transient(f"connection to {self.where} lost before DATA: {e or type(e).__name__}") from e
        if not claim():
            self._rset()
            return False
        try:
            code, text = smtp.data(data)
        except smtplib.SMTPDataError as e:  # DATA itself refused: the body was never sent
            code, text = e.smtp_code, e.smtp_error
        except (OSError, smtplib.SMTPException) as e:
            self._drop()
            raise _Uncertain(f"connection to {self.where} lost during DATA: {e or type(e).__name__}") from e
        if code != 250:
            self._fail(code, text, "DATA", _Permanent)
        return True


# --------------------------------------------------------------------------------------------------
# Delivering a week


@dataclass(frozen=True)
class DeliveryReport:
    """What a delivery run did; member emails per outcome."""

    week: str
    mode: Literal["smtp", "outbox"]
    folder: str
    outbox: str | None
    members: int
    articles: int
    sent: tuple[str, ...] = ()
    written: tuple[str, ...] = ()
    empty: tuple[str, ...] = ()
    already: tuple[str, ...] = ()
    """Served by an earlier run ('sent'/'bounced'; 'sent' only for the outbox)."""
    uncertain: tuple[str, ...] = ()
    """Left 'sending' by a crash: maybe delivered; not resent without retry_uncertain."""
    failed: tuple[tuple[str, str], ...] = ()
    """(email, error): 4xx after the retries, or not attempted because the batch stopped."""
    bounced: tuple[tuple[str, str], ...] = ()
    error: str | None = None
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = [{"email": e, "error": m} for e, m in self.failed]
        data["bounced"] = [{"email": e, "error": m} for e, m in self.bounced]
        return data


@dataclass
class _Tally:
    sent: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    bounced: list[tuple[str, str]] = field(default_factory=list)


def outbox_name(member: "Member") -> str:
    return re.sub(r"[^a-z0-9@._+-]", "_", member.email.lower()) + ".eml"


def deliver_week(
    store: "Store", week: str, settings: Settings, sources: Sequence[Source], *, send: bool,
    member_email: str | None = None, retry_uncertain: bool = False, now: datetime | None = None,
    retries: int = RETRIES, backoff: float = BACKOFF,
) -> DeliveryReport:
    """Build and write the week's digest, then serve every active member (or only `member_email`).

    SMTP when `send` and `settings.smtp_host`, else `.eml` files in the week's `outbox/` (status
    'written'; rewritten on each run, so the outbox always shows the latest digest). Raises
    `MailError` (with `.report`) when the batch had to stop: server unreachable, sender or login
    refused, or 4xx for several members in a row; whatever was not sent stays pending for the next run.
    """
    started = time.monotonic()
    check_public_url_setting(settings)  # before anything is written or sent
    digest = build_digest(store, week, settings, sources, now=now)
    from .search import digest_trends_html

    folder = write_digest(digest, settings.digests_dir, trends_html=digest_trends_html(store, week))
    store.record_digest(week, digest.built_at, digest.article_count, str(folder))
    if member_email is not None:
        member = store.get_member(member_email.strip())
        if member is None or not member.active:
            why = "is not a member (see `veille members list`)" if member is None else "has unsubscribed"
            raise MailError(member_email, why, permanent=True)
        members = [member]
    else:
        members = store.list_members(active_only=True)
    smtp = bool(send and settings.smtp_host)
    outbox = folder / "outbox"
    tally = _Tally()
    states = store.delivery_states(week)
    todo: list[tuple["Member", MemberDigest | None]] = []
    for member in members:
        state = states.get(member.id)
        status = state.status if state else None
        if status in ("sent", "bounced"):
            tally.already.append(member.email)
        elif status == "sending" and not retry_uncertain:
            tally.uncertain.append(member.email)
        else:
            todo.append((member, member_digest(digest, member)))
    error: MailError | None = None
    if smtp:
        error = _send_all(store, week, settings, todo, tally, retry_uncertain, now, retries, backoff)
    else:
        _write_outbox(store, week, settings, todo, tally, outbox, now)
    report = DeliveryReport(
        week=week, mode="smtp" if smtp else "outbox", folder=str(folder),
        outbox=None if smtp else str(outbox), members=len(members), articles=digest.article_count,
        sent=tuple(tally.sent), written=tuple(tally.written), empty=tuple(tally.empty),
        already=tuple(tally.already), uncertain=tuple(tally.uncertain), failed=tuple(tally.failed),
        bounced=tuple(tally.bounced), error=str(error) if error else None,
        duration=round(time.monotonic() - started, 3),
    )
    if error is not None:
        error.report = report  # type: ignore[attr-defined]
        raise error
    return report


def _write_outbox(store: "Store", week: str, settings: Settings, todo: list, tally: _Tally, outbox: Path,
                  now: datetime | None) -> None:
    outbox.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[int, str, str | None, int]] = []
    for member, md in todo:
        path = outbox / outbox_name(member)
        if md is None:
            path.unlink(missing_ok=True)  # an earlier run of this week may have had news for them
            tally.empty.append(member.email)
            rows.append((member.id, "empty", None, 0))
        else:
            msg = render_email(md, settings, now=now)
            write_atomic(path, message_bytes(msg), mode=0o600)
            tally.written.append(member.email)
            rows.append((member.id, "written", msg["Message-ID"], md.article_count))
        if len(rows) >= 200:
            store.set_deliveries(week, rows)
            rows = []
    store.set_deliveries(week, rows)


def _send_all(store: "Store", week: str, settings: Settings, todo: list, tally: _Tally, retry_uncertain: bool,
              now: datetime | None, retries: int, backoff: float) -> MailError | None:
    session = SmtpSession(settings)
    from_addr = sender(settings).addr_spec
    deferred_in_a_row = 0
    try:
        for index, (member, md) in enumerate(todo):
            if md is None:
                store.set_delivery(week, member.id, "empty", articles=0)
                tally.empty.append(member.email)
                continue
            msg = render_email(md, settings, now=now)
            outcome = _send_one(store, session, week, member, md, from_addr, message_bytes(msg), msg["Message-ID"],
                                retry_uncertain, retries, backoff, tally)
            deferred_in_a_row = deferred_in_a_row + 1 if outcome == "failed" else 0
            if deferred_in_a_row >= GIVE_UP_AFTER:
                outcome = MailError(member.email, f"the SMTP server {session.where} still deferred {GIVE_UP_AFTER} "
                                    f"members in a row after retries (last: {tally.failed[-1][1]}); nothing is "
                                    "lost: run `veille digest --send` again later", permanent=False)
            if isinstance(outcome, MailError):
                tally.failed.extend((m.email, "not attempted: the batch stopped")
                                    for m, d in todo[index + 1:] if d is not None)
                return outcome
    finally:
        session.close()
    return None


def _send_one(store: "Store", session: SmtpSession, week: str, member: "Member", md: MemberDigest, from_addr: str,
              data: bytes, mid: str, retry_uncertain: bool, retries: int, backoff: float,
              tally: _Tally) -> str | MailError:
    """Try one member up to 1 + `retries` times; returns the outcome, or the MailError that stops the batch."""
    for attempt in range(retries + 1):
        claimed = False

        def claim() -> bool:
            nonlocal claimed
            claimed = store.claim_delivery(week, member.id, mid, md.article_count, retry_uncertain=retry_uncertain)
            return claimed

        try:
            if not session.send(from_addr, member.email, data, claim):
                tally.already.append(member.email)  # another sender holds it, or it was served meanwhile
                return "already"
        except _Uncertain as e:
            store.set_delivery(week, member.id, "sending", error=str(e))
            tally.uncertain.append(member.email)
            return "uncertain"
        except _Unreachable as e:
            if claimed:
                store.set_delivery(week, member.id, "failed", error=str(e))
            tally.failed.append((member.email, str(e)))
            return MailError(member.email, f"{e}; nothing was lost: run `veille digest --send` again",
                             permanent=False)
        except _SenderRefused as e:  # login or sender refused: the settings, not this member
            tally.failed.append((member.email, str(e)))
            return MailError(member.email, f"{e}; nothing more was sent: fix the settings and run again",
                             permanent=True, code=e.code)
        except _Permanent as e:
            store.set_delivery(week, member.id, "bounced", message_id=mid, error=str(e), attempt=not claimed)
            tally.bounced.append((member.email, str(e)))
            return "bounced"
        except _Transient as e:
            store.set_delivery(week, member.id, "failed", error=str(e), attempt=not claimed)
            if attempt == retries:
                tally.failed.append((member.email, str(e)))
                return "failed"
            time.sleep(backoff * 2 ** attempt)
            continue
        store.set_delivery(week, member.id, "sent", message_id=mid)
        tally.sent.append(member.email)
        return "sent"
    return "failed"


def send_text(settings: Settings, to: str, subject: str, text: str, *, retries: int = RETRIES,
              backoff: float = BACKOFF) -> str:
    """Send one plain-text email (the staff report) over SMTP; returns its Message-ID.

    Raises `MailError` when no SMTP host is configured, or the server refuses or stays unreachable.
    """
    from email.utils import make_msgid

    if not settings.smtp_host:
        raise MailError(to, "no SMTP server configured (set VEILLE_SMTP_HOST)", permanent=True)
    from_address = sender(settings)
    msg = EmailMessage(policy=_POLICY)
    msg["Subject"] = clean_text(subject)
    msg["From"] = from_address
    msg["To"] = Address(addr_spec=to.strip())
    msg["Date"] = format_datetime(datetime.now(timezone.utc).astimezone(PARIS))
    msg["Message-ID"] = make_msgid(domain=from_address.domain)
    msg["MIME-Version"] = "1.0"
    msg["Content-Type"] = 'text/plain; charset="utf-8"'
    msg["Content-Transfer-Encoding"] = "quoted-printable"
    msg.set_payload(_qp(text))
    session = SmtpSession(settings)
    try:
        for attempt in range(retries + 1):
            try:
                session.send(from_address.addr_spec, to.strip(), message_bytes(msg), lambda: True)
                return msg["Message-ID"]
            except _Uncertain as e:
                raise MailError(to, f"{e}; it may have been delivered", permanent=False) from e
            except (_Permanent, _SenderRefused) as e:
                raise MailError(to, str(e), permanent=True, code=e.code) from e
            except _Transient as e:
                if attempt == retries or isinstance(e, _Unreachable):
                    raise MailError(to, str(e), permanent=False, code=e.code) from e
                time.sleep(backoff * 2 ** attempt)
    finally:
        session.close()
    raise AssertionError("unreachable")
