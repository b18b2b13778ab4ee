"""Configuration files: YAML with line numbers, sources.yaml, and the settings table (veille.yaml + env).

Every validation error is a `ConfigError` naming file, line and key, because the people who edit these
files are staff, not programmers, and "invalid config" alone sends them hunting.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import yaml

from .errors import ConfigError
from .types import Source

# --------------------------------------------------------------------------------------------------
# YAML with line numbers


class Mapping(dict):
    """A YAML mapping that remembers the line of itself and of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class Sequence(list):
    line: int = 0
    item_lines: list[int]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: 10x faster, same marks
    path = "<yaml>"


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Mapping:
    mapping = Mapping()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise ConfigError(loader.path, key_node.start_mark.line + 1, None, "a key must be a plain word")
        key = str(key)
        if key in mapping:
            raise ConfigError(
                loader.path, key_node.start_mark.line + 1, key,
                f"duplicate key (first at line {mapping.key_lines[key]})", "keep only one of them",
            )
        mapping.key_lines[key] = key_node.start_mark.line + 1
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> Sequence:
    seq = Sequence(loader.construct_object(child, deep=True) for child in node.value)
    seq.line = node.start_mark.line + 1
    seq.item_lines = [child.start_mark.line + 1 for child in node.value]
    return seq


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def read_text_file(path: str | Path, utf8_hint: str = "save the file as UTF-8") -> str:
    """A staff-edited file as text; a missing or non-UTF-8 file is a `ConfigError` naming the line."""
    path = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError as e:
        raise ConfigError(path, None, None, "file not found", "create it or pass another path") from e
    except OSError as e:
        raise ConfigError(path, None, None, f"cannot read the file: {e.strerror}") from e
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(path, line, None, "not valid UTF-8", utf8_hint) from e


def load_yaml(path: str | Path, text: str | None = None) -> Any:
    """Parse a YAML file into `Mapping`/`Sequence` objects carrying line numbers."""
    path = str(path)
    if text is None:
        text = read_text_file(path)
    loader = _Loader(text)
    loader.path = path
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = e.problem or str(e)
        raise ConfigError(path, line, None, f"invalid YAML: {problem}",
                          "check indentation and quotes around values containing ':' or '#'") from e
    except yaml.YAMLError as e:
        raise ConfigError(path, None, None, f"invalid YAML: {e}") from e
    finally:
        loader.dispose()


def require_mapping(path: str, value: Any, what: str, line: int | None = None) -> Mapping:
    if not isinstance(value, Mapping):
        found = "nothing" if value is None else type(value).__name__
        raise ConfigError(path, getattr(value, "line", None) or line, what, f"expected a mapping (key: value), found {found}")
    return value


def check_keys(path: str, mapping: Mapping, allowed: set[str], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            close = _closest(key, allowed)
            raise ConfigError(
                path, mapping.line_of(key), f"{where}.{key}" if where else key, "unknown key",
                f"did you mean {close!r}?" if close else f"allowed keys: {', '.join(sorted(allowed))}",
            )


def _closest(word: str, choices: set[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return match[0] if match else None


# --------------------------------------------------------------------------------------------------
# Value parsers shared by the files

_DURATION = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$")


def parse_duration(value: Any) -> timedelta:
    """`90s`, `30m`, `1h`, `2h30m`, `1d`, or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30m, 1h or 1d")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError("expected a duration like 30m, 1h or 1d")
    m = _DURATION.match(value)
    if not m or not any(m.groups()):
        raise ValueError(f"{value!r} is not a duration; write e.g. 45s, 30m, 1h, 2h30m or 1d")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    delta = timedelta(days=d, hours=h, minutes=mi, seconds=s)
    if delta <= timedelta(0):
        raise ValueError("a duration must be positive")
    return delta


def check_url(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected an http(s) URL")
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        raise ValueError(f"{value!r} is not an absolute http(s) URL")
    return value


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
"""Hosts where `public_url` may be plain http: nobody else can reach them (tests, `veille demo`)."""


def check_public_url(value: Any) -> str:
    """`public_url`: an absolute https URL, or http on a loopback host.

    It builds the one-click unsubscribe link of List-Unsubscribe, which RFC 8058 wants https (mail
    providers ignore an http one), and the archive links of every email.
    """
    value = check_url(value)
    parts = urlsplit(value)
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() != "https" and host not in LOOPBACK_HOSTS:
        raise ValueError(f"{value!r} is not https: the one-click unsubscribe link (List-Unsubscribe, RFC 8058) "
                         "must be https; write https://..., plain http is accepted only for 127.0.0.1, "
                         "localhost and ::1 (tests, demo)")
    return value


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "oui"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", "non", ""):
        return False
    raise ValueError("expected true or false")


# --------------------------------------------------------------------------------------------------
# sources.yaml

SOURCE_KEYS = {
    "id", "name", "type", "url", "interval", "full_text", "link_selector", "excerpt", "licence",
    "allow_private", "enabled", "tags",
}
DEFAULT_KEYS = {"interval", "full_text", "excerpt", "allow_private"}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def load_sources(path: str | Path, text: str | None = None) -> list[Source]:
    """Read and validate sources.yaml; raise `ConfigError` on the first problem."""
    path = str(path)
    doc = require_mapping(path, load_yaml(path, text), "")
    check_keys(path, doc, {"defaults", "sources"}, "")
    defaults = doc.get("defaults") or Mapping()
    defaults = require_mapping(path, defaults, "defaults", doc.line_of("defaults"))
    check_keys(path, defaults, DEFAULT_KEYS, "defaults")
    items = doc.get("sources")
    if not isinstance(items, Sequence):
        raise ConfigError(path, doc.line_of("sources") if "sources" in doc else 1, "sources",
                          "expected a list of sources", "start each source with '- id: ...'")
    sources: list[Source] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        item = require_mapping(path, item, f"sources[{index}]", items.item_lines[index])
        check_keys(path, item, SOURCE_KEYS, f"sources[{index}]")
        merged = {**defaults, **item}

        def line(key: str) -> int:
            return item.line_of(key) if key in item else (defaults.line_of(key) if key in defaults else item.line)

        def get(key: str, parse: Callable[[Any], Any], default: Any = None) -> Any:
            if key not in merged or merged[key] is None:
                return default
            try:
                return parse(merged[key])
            except ValueError as e:
                sid = item.get("id", index)
                raise ConfigError(path, line(key), f"sources[{sid}].{key}", str(e)) from None

        for required in ("id", "name", "type", "url"):
            if required not in item:
                raise ConfigError(path, item.line, f"sources[{index}].{required}", "missing required key")
        sid = item["id"]
        if not isinstance(sid, str) or not _SLUG.match(sid):
            raise ConfigError(path, line("id"), f"sources[{index}].id", f"{sid!r} is not a slug",
                              "use lower-case letters, digits, '-' and '_'")
        if sid in seen:
            raise ConfigError(path, line("id"), f"sources[{sid}].id",
                              f"duplicate id (first used at line {seen[sid]})", "ids must be unique")
        seen[sid] = line("id")
        stype = item["type"]
        if stype not in ("feed", "html", "sitemap"):
            raise ConfigError(path, line("type"), f"sources[{sid}].type", f"{stype!r} is not a source type",
                              "use feed, html or sitemap")
        selector = get("link_selector", _nonempty_str)
        if stype == "html" and not selector:
            raise ConfigError(path, item.line, f"sources[{sid}].link_selector",
                              "an html source needs a link_selector", 'e.g. link_selector: "h3 a"')
        if selector:
            _check_selector(path, line("link_selector"), sid, selector)
        excerpt = get("excerpt", _choice("none", "short", "full"), "short")
        tags = get("tags", lambda v: tuple(str(t) for t in v) if isinstance(v, list) else _bad("a list"), ())
        sources.append(Source(
            id=sid,
            name=get("name", _nonempty_str),
            type=stype,
            url=get("url", check_url),
            interval=get("interval", parse_duration, timedelta(hours=1)),
            full_text=get("full_text", parse_bool, True),
            link_selector=selector,
            excerpt=excerpt,
            licence=get("licence", _nonempty_str),
            allow_private=get("allow_private", parse_bool, False),
            enabled=get("enabled", parse_bool, True),
            tags=tags,
            line=item.line,
        ))
    return sources


def _bad(what: str) -> Any:
    raise ValueError(f"expected {what}")


def _nonempty_str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty text")
    return value.strip()


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return parse


def _check_selector(path: str, line: int, sid: str, selector: str) -> None:
    import soupsieve

    try:
        soupsieve.compile(selector)
    except Exception as e:  # soupsieve raises SelectorSyntaxError, a ValueError-like without a stable base
        raise ConfigError(path, line, f"sources[{sid}].link_selector", f"invalid CSS selector: {e}") from e


# --------------------------------------------------------------------------------------------------
# Settings: one table feeds veille.yaml, environment variables (VEILLE_<NAME>) and defaults.


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[Any], Any]
    help: str
    secret: bool = False

    @property
    def env(self) -> str:
        return "VEILLE_" + self.name.upper()


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a whole number between {lo} and {hi}") from None
        if isinstance(value, bool) or not lo <= number <= hi:
            raise ValueError(f"expected a whole number between {lo} and {hi}")
        return number

    return parse


def _float_range(lo: float, hi: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number between {lo} and {hi}") from None
        if not lo <= number <= hi:
            raise ValueError(f"expected a number between {lo} and {hi}")
        return number

    return parse


def _opt_str(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, (str, int)):
        raise ValueError("expected a text")
    return str(value).strip()


def _cron(value: Any) -> str:
    from .schedule import cron_trigger  # crontab syntax (5 fields, or 6 with seconds first) lives there

    cron_trigger(str(value))
    return str(value)


SETTINGS: tuple[Setting, ...] = (
    # fetching
    Setting("contact", "https://github.com/veille-territoires/veille", _nonempty_str,
            "Contact (URL or email) put in the User-Agent so publishers can reach the operator."),
    Setting("concurrency", 20, _int_range(1, 500), "Requests in flight at once, all hosts together."),
    Setting("per_host_concurrency", 2, _int_range(1, 100), "Requests in flight at once to one host."),
    Setting("politeness_delay", 1.0, _float_range(0, 3600),
            "Seconds between two requests to the same host (relaxed only by benchmarks)."),
    Setting("connect_timeout", 10.0, _float_range(0.1, 600), "Seconds to establish a connection."),
    Setting("read_timeout", 20.0, _float_range(0.1, 600), "Seconds without receiving a byte."),
    Setting("request_deadline", 60.0, _float_range(0.1, 3600), "Total seconds one request may take."),
    Setting("max_body_bytes", 10_000_000, _int_range(1000, 1_000_000_000),
            "Largest body accepted, after decompression."),
    Setting("max_redirects", 5, _int_range(0, 20), "Redirects followed before giving up."),
    Setting("allow_private", False, parse_bool,
            "Allow fetching private, loopback and link-local addresses (tests, demo, benchmarks)."),
    Setting("max_backoff", "1d", parse_duration, "Longest wait between two attempts at a failing source."),
    Setting("workers", 0, _int_range(0, 64), "Processes for parsing and extraction (0: one per core)."),
    # digests and mail
    Setting("digest_cron", "30 7 * * mon", _cron,
            "When the weekly digest is built and sent (Europe/Paris; crontab, or 6 fields with seconds first)."),
    Setting("digest_grace", "2d", parse_duration, "After downtime, a missed digest is still sent within this delay."),
    Setting("section_cap", 8, _int_range(1, 200), "Articles per topic section in an email."),
    Setting("digest_title", "Veille territoires numériques", _nonempty_str,
            "Title of the digest, first words of its email subject."),
    Setting("organisation", "Association des territoires numériques", _nonempty_str,
            "Name shown as the sender organisation."),
    Setting("mail_from", "veille@localhost", _nonempty_str, "From address of digests."),
    Setting("reply_to", None, _opt_str, "Reply-To address of digests."),
    Setting("public_url", "https://veille.example.org", check_public_url,
            "Base URL of the public site (archive pages, one-click unsubscribe); https "
            "(http only on 127.0.0.1, localhost or ::1)."),
    Setting("unsubscribe_mailto", None, _opt_str, "Address for mailto: unsubscribe (default: mail_from)."),
    Setting("smtp_host", None, _opt_str, "SMTP server; none: digests are written to digests/WEEK/outbox/."),
    Setting("smtp_port", 0, _int_range(0, 65535), "SMTP port (0: 25, 587 with starttls, 465 with ssl)."),
    Setting("smtp_user", None, _opt_str, "SMTP user name."),
    Setting("smtp_password", None, _opt_str, "SMTP password (environment only).", secret=True),
    Setting("smtp_tls", "none", _choice("none", "starttls", "ssl"), "none, starttls or ssl."),
    Setting("smtp_rate", 20.0, _float_range(0.1, 10_000), "Messages per second at most."),
    Setting("digests_dir", "digests", _nonempty_str, "Where weekly digests are written."),
    # operations
    Setting("staff_email", None, _opt_str, "Where the weekly staff report goes (none: written to digests/)."),
    Setting("backups_dir", "backups", _nonempty_str, "Where the daily backups go."),
    Setting("backup_keep", 7, _int_range(1, 365), "Backups kept."),
    Setting("fetch_log_retention", "90d", parse_duration, "Fetch log rows older than this are pruned."),
    Setting("failing_threshold", 5, _int_range(1, 1000),
            "A source is reported to staff after more than this many failed attempts in a row."),
    Setting("silent_days", 14, _int_range(1, 3650), "Days without a new article before a source is reported."),
    Setting("maintenance_cron", "15 3 * * *", _cron, "When the daily backup, optimize and log pruning run."),
    Setting("staff_report_cron", "0 8 * * mon", _cron, "When the weekly staff report is sent (Europe/Paris)."),
)
SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    contact: str
    concurrency: int
    per_host_concurrency: int
    politeness_delay: float
    connect_timeout: float
    read_timeout: float
    request_deadline: float
    max_body_bytes: int
    max_redirects: int
    allow_private: bool
    max_backoff: timedelta
    workers: int
    digest_cron: str
    digest_grace: timedelta
    section_cap: int
    digest_title: str
    organisation: str
    mail_from: str
    reply_to: str | None
    public_url: str
    unsubscribe_mailto: str | None
    smtp_host: str | None
    smtp_port: int
    smtp_user: str | None
    smtp_password: str | None
    smtp_tls: str
    smtp_rate: float
    digests_dir: str
    staff_email: str | None
    backups_dir: str
    backup_keep: int
    fetch_log_retention: timedelta
    failing_threshold: int
    silent_days: int
    maintenance_cron: str
    staff_report_cron: str

    def replace(self, **changes: Any) -> "Settings":
        from dataclasses import replace

        return replace(self, **changes)


assert {f.name for f in fields(Settings)} == set(SETTINGS_BY_NAME)


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Defaults, overridden by veille.yaml (if it exists), overridden by VEILLE_* environment variables."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    spath = str(path) if path else ""
    if path and Path(path).exists():
        doc = load_yaml(path)
        if doc is not None:
            doc = require_mapping(spath, doc, "")
            check_keys(spath, doc, set(SETTINGS_BY_NAME), "")
            for key, value in doc.items():
                if SETTINGS_BY_NAME[key].secret:
                    raise ConfigError(spath, doc.line_of(key), key, "secrets belong in the environment",
                                      f"set {SETTINGS_BY_NAME[key].env} instead")
                values[key] = value
                lines[key] = doc.line_of(key)
    result: dict[str, Any] = {}
    for setting in SETTINGS:
        origin, line = spath, lines.get(setting.name)
        raw = values.get(setting.name, setting.default)
        if setting.env in env:
            raw, origin, line = env[setting.env], f"environment variable {setting.env}", None
        try:
            result[setting.name] = setting.parse(raw) if raw is not None else None
        except ValueError as e:
            raise ConfigError(origin or "<defaults>", line, setting.name, str(e)) from None
    return Settings(**result)


def default_settings() -> Settings:
    return load_settings(None, env={})
