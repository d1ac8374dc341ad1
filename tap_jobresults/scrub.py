"""What may reach a log line: no secret, no URL credential, no control character from a vendor.

Every log record of the process, whichever logger makes it (the tap's, the SDK's, urllib3's, ...)
and whichever handler writes it, is rewritten once, at creation (`install_scrubbing`):

- the values interpolated into the message (vendor error texts, IDs, exception messages, URLs)
  have their control characters escaped, so no vendor text can start a forged log line, rewrite
  the terminal (ANSI escapes) or hide text (CR, bidi overrides); the tap's own message templates
  keep their newlines (the end-of-run summary is a list);
- every known secret (config values, issued tokens) is replaced by `***`, in the message and in
  the text of a logged traceback.

`safe_url` is the one place a URL is rendered for a message: without userinfo, query or fragment.
"""

from __future__ import annotations

import logging
import re
import threading
import typing as t
from collections.abc import Mapping
from urllib.parse import urlsplit


class SecretRegistry:
    """Every secret the tap knows (config values, issued tokens), to scrub from any text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._ordered: tuple[str, ...] = ()  # longest first, so a secret inside another goes last
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every secret (one process, one tap: for tests that build many taps in a row)."""
        with self._lock:
            self._secrets.clear()
            self._ordered = ()

    def add(self, value: t.Any) -> None:
        if isinstance(value, str) and len(value) >= 4:
            with self._lock:
                for form in (value, value.strip(), repr(value)[1:-1], escape(value)):
                    if len(form) >= 4:  # as given, trimmed, and as it appears escaped in reprs and logs
                        self._secrets.add(form)
                self._ordered = tuple(sorted(self._secrets, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def __contains__(self, text: str) -> bool:
        return any(secret in text for secret in self._ordered)


SECRETS = SecretRegistry()


# -- escaping ---------------------------------------------------------------------------------------

# C0 and C1 controls (ESC starts ANSI sequences, CSI is U+009B), DEL, line and paragraph separators,
# and the bidirectional overrides that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape(text: str) -> str:
    """Text from outside (a vendor, an exception) as one printable line."""
    return _CONTROL.sub(_escaped, text)


def _escape_template(text: str) -> str:
    return _CONTROL_BUT_NEWLINE.sub(_escaped, text)


class _Printable:
    """A log argument that renders escaped with %s and %r alike."""

    __slots__ = ("value",)

    def __init__(self, value: t.Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return escape(str(self.value))

    def __repr__(self) -> str:
        return escape(repr(self.value))


def _printable(arg: t.Any) -> t.Any:
    if arg is None or isinstance(arg, (bool, int, float)):
        return arg  # %d, %f and friends need the number itself; numbers carry no control character
    return _Printable(arg)


# -- URLs -------------------------------------------------------------------------------------------


def safe_url(url: t.Any) -> str:
    """A URL for a message: scheme, host, port and path only. Userinfo (`user:password@`), a query
    string (which may carry a key or a cursor) and a fragment are never printed."""
    text = str(url)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return "<an invalid URL>"
    if not parts.scheme or not parts.netloc:
        return clip(text.split("?", 1)[0].split("#", 1)[0], 200)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    return clip(f"{parts.scheme}://{netloc}{parts.path}", 200)


def clip(text: str, limit: int) -> str:
    """Scrub first, then shorten: cutting first could leave a secret's head in the text, where
    the whole secret would no longer be recognised."""
    text = SECRETS.scrub(text)
    return text if len(text) <= limit else text[:limit] + "..."


# -- log records ------------------------------------------------------------------------------------


def clean_record(record: logging.LogRecord) -> None:
    """Escape what was interpolated, scrub secrets; the traceback text too. Never raises."""
    if getattr(record, "tap_jobresults_clean", False):
        return
    record.tap_jobresults_clean = True
    if _is_metric(record):
        return
    try:
        args = record.args
        if isinstance(args, Mapping):
            args = {key: _printable(value) for key, value in args.items()}
        elif isinstance(args, tuple):
            args = tuple(_printable(arg) for arg in args)
        template = record.msg if isinstance(record.msg, str) else escape(str(record.msg))
        message = template % args if args else template
    except Exception:  # a malformed call: logging reports it itself, leave the record alone
        return
    record.msg, record.args = SECRETS.scrub(_escape_template(message)), None
    if record.exc_info and record.exc_info[1] is not None:
        try:
            text = _one_line_messages(logging.Formatter().formatException(record.exc_info), record.exc_info[1])
        except Exception:
            text = f"{type(record.exc_info[1]).__name__} (traceback not rendered)"
        # Rendered here, scrubbed and escaped; the raw exception goes, so that no formatter renders
        # it again from the original (a JSON formatter would quote its unscrubbed message).
        record.exc_text = SECRETS.scrub(_escape_template(text))
        record.exc_info = None


def _one_line_messages(text: str, exc: BaseException) -> str:
    """A rendered traceback in which the message of each exception (and of its causes) is one
    escaped line: the traceback's own lines stay lines, a vendor text in a message cannot add any."""
    seen: set[int] = set()
    todo: list[t.Any] = [exc]
    while todo and len(seen) < 20:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        message = str(item)
        if message and _CONTROL.search(message):
            text = text.replace(message, escape(message))
        todo += [item.__cause__, item.__context__]
    return text


def _is_metric(record: logging.LogRecord) -> bool:
    """A METRIC line of singer_sdk.metrics, left as the SDK made it (its StructuredFormatter and
    MetricExclusionFilter read the Point in `args`): a Point renders as JSON, which escapes every
    control character; only a known secret in it makes it a record to clean like any other."""
    args = record.args
    if record.msg != "METRIC: %s" or not isinstance(args, tuple) or len(args) != 1:
        return False
    if type(args[0]).__name__ != "Point":
        return False
    try:
        return str(args[0]) not in SECRETS
    except Exception:
        return False


class ScrubSecretsFilter(logging.Filter):
    """No log record leaves the process with a known secret in it (see `install_scrubbing`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        clean_record(record)
        return True


# Loggers that carry a filter of their own, whatever handlers a logging config gives them. A filter
# on a logger sees only records logged on that very logger, so the record factory below is what
# covers child loggers (one per stream) and third-party ones; filters are the second line.
SCRUBBED_LOGGERS = ("", "tap-jobresults", "singer_sdk", "singer_sdk.metrics", "urllib3", "backoff", "py.warnings")


def install_scrubbing() -> None:
    """Scrub secrets from every log record, whichever logger it comes from and whichever handler
    (console, a SINGER_SDK_LOG_CONFIG file handler, ...) writes it. Safe to call repeatedly: call it
    again after anything that (re)configures logging."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "scrubs_secrets", False):

        def scrubbing_factory(*args: t.Any, **kwargs: t.Any) -> logging.LogRecord:
            record = factory(*args, **kwargs)
            clean_record(record)
            return record

        scrubbing_factory.scrubs_secrets = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(scrubbing_factory)
    loggers: list[logging.Logger] = [logging.getLogger(name) for name in SCRUBBED_LOGGERS]
    loggers += [
        node
        for name, node in list(logging.Logger.manager.loggerDict.items())
        if isinstance(node, logging.Logger) and name.split(".")[0] in ("tap-jobresults", "singer_sdk")
    ]
    for log in loggers:
        _add_filter(log)
        for handler in log.handlers:
            _add_filter(handler)


def _add_filter(target: logging.Filterer) -> None:
    if not any(isinstance(f, ScrubSecretsFilter) for f in target.filters):
        target.addFilter(ScrubSecretsFilter())
