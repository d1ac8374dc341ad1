"""Settings: the JSON schema the SDK validates, plus the checks a schema cannot express.

Names are fixed by the user-facing contract (shared/contract.md). A source is active when its
section is present. Every check here runs before the first request, and every message names the
setting it is about, so that a cron user reading one log line knows what to fix.
"""

from __future__ import annotations

import ipaddress
import json
import typing as t
from collections.abc import Mapping
from urllib.parse import urlsplit

from singer_sdk import typing as th

from tap_jobresults.lifecycle import iso
from tap_jobresults.scrub import safe_url

DEFAULT_MAX_CONCURRENT_REQUESTS = 8

SOURCES = ("cognite", "clavata", "talonic")
SECRET_KEYS = frozenset({"token", "client_secret", "api_key", "job_token"})
HEADER_SECRETS = frozenset({"token", "api_key", "job_token"})  # sent in a header: ASCII only
URL_SETTINGS = frozenset({"base_url", "token_url"})

DEFAULT_BASE_URLS = {
    "cognite": "https://api.cognitedata.com",
    "clavata": "https://gateway.app.clavata.ai:8443",
    "talonic": "https://api.talonic.com",
}

# -- Response limits and secrets (issue 10, HTTP side) ------------------------------------------------
# Kept together so that the settings of the hostile-server work stay in one place.

DEFAULT_MAX_RESPONSE_MB = 1024
MIN_SECRET_LENGTH = 8  # shorter values cannot be scrubbed from logs without mangling them

RESPONSE_LIMIT_SETTINGS = (
    th.Property(
        "max_response_mb",
        th.NumberType,
        default=DEFAULT_MAX_RESPONSE_MB,
        description=(
            "Largest response body in MiB, counted after decompression; a job whose response is "
            "larger fails (named, and fetched again next run) instead of exhausting memory."
        ),
    ),
)
RESPONSE_LIMIT_BOUNDS = {"max_response_mb": (1, 65536)}


def secret_values(config: t.Any) -> list[tuple[str, t.Any]]:
    """(setting, value) for every secret setting present in the config, whatever its type."""
    found: list[tuple[str, t.Any]] = []
    if not isinstance(config, Mapping):
        return found
    for name in SOURCES:
        section = config.get(name)
        if not isinstance(section, Mapping):
            continue
        found += [(f"{name}.{key}", section[key]) for key in sorted(SECRET_KEYS) if key in section]
        jobs = section.get("entity_matching_jobs")
        for index, job in enumerate(jobs if isinstance(jobs, list) else []):
            if isinstance(job, Mapping) and "job_token" in job:
                found.append((f"{name}.entity_matching_jobs[{index}].job_token", job["job_token"]))
    return found


def short_secret_errors(config: t.Any) -> list[str]:
    """A secret of a few characters cannot be scrubbed from logs safely (every "abc" in a log line
    would be masked, or none): refuse it, naming the setting and never the value."""
    errors = []
    for setting, value in secret_values(config):
        optional_and_empty = value == "" and not setting.endswith("api_key")
        if isinstance(value, str) and not optional_and_empty and len(value.strip()) < MIN_SECRET_LENGTH:
            errors.append(
                f"{setting}: too short to be a real credential (fewer than {MIN_SECRET_LENGTH} characters); "
                "check the value"
            )
    return errors


def _path_name(path: t.Iterable[t.Any]) -> str:
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "config"


def _holds_secret(node: t.Any) -> bool:
    if isinstance(node, Mapping):
        return any(key in SECRET_KEYS or _holds_secret(value) for key, value in node.items())
    if isinstance(node, list):
        return any(_holds_secret(value) for value in node)
    return False


def schema_error_message(error: t.Any) -> str:
    """A jsonschema error as the SDK words it, except that a secret's value is never quoted:
    jsonschema messages start with the offending instance ("12345678 is not of type 'string'")."""
    path = list(error.absolute_path)
    in_secret = any(isinstance(part, str) and part in SECRET_KEYS for part in path)
    if in_secret or (_holds_secret(error.instance) and error.validator not in ("required", "additionalProperties")):
        expected = error.validator_value
        if error.validator == "type":
            types = expected if isinstance(expected, list) else [expected]
            wanted = " or ".join(str(kind) for kind in types)
            return f"{_path_name(path)}: must be of type {wanted} (the value is a secret and is not shown)"
        return f"{_path_name(path)}: invalid value for '{error.validator}' (the value is a secret and is not shown)"
    if path and path[-1] in URL_SETTINGS:  # a URL may carry a password or a key: shown without them
        return f"{_path_name(path)}: {safe_url(error.instance)} is not a valid URL ('{error.validator}')"
    message = str(error.message)
    if path:
        message += f" in config[{']['.join(repr(index) for index in path)}]"
    return message


# -- end of response limits and secrets -----------------------------------------------------------------

_COGNITE = th.ObjectType(
    th.Property(
        "base_url",
        th.URIType,
        default=DEFAULT_BASE_URLS["cognite"],
        description="CDF cluster URL, e.g. https://westeurope-1.cognitedata.com.",
    ),
    th.Property("project", th.StringType, required=True, description="CDF project name."),
    th.Property(
        "token",
        th.StringType,
        secret=True,
        description="Static bearer token. Give this, or the OAuth client-credentials settings.",
    ),
    th.Property("client_id", th.StringType, description="OAuth 2.0 client ID (client credentials)."),
    th.Property("client_secret", th.StringType, secret=True, description="OAuth 2.0 client secret."),
    th.Property("token_url", th.URIType, description="OAuth 2.0 token endpoint of the identity provider."),
    th.Property(
        "scopes",
        th.ArrayType(th.StringType),
        description="OAuth scopes, e.g. ['https://westeurope-1.cognitedata.com/.default'].",
    ),
    th.Property("audience", th.StringType, description="OAuth audience (Auth0-style identity providers)."),
    th.Property(
        "entity_matching_jobs",
        th.ArrayType(
            th.ObjectType(
                th.Property("job_id", th.IntegerType, required=True),
                th.Property("job_token", th.StringType, secret=True),
                additional_properties=False,
            )
        ),
        description=(
            "Predict jobs to extract, as {job_id, job_token?}. CDF documents no list endpoint "
            "for predict jobs, so their IDs come from here. job_token is sent as X-Job-Token."
        ),
    ),
    th.Property(
        "pipeline_ids",
        th.ArrayType(th.IntegerType),
        description=(
            "Entity-matching pipelines whose runs to extract. Absent: every pipeline the "
            "project lists. Empty list: none."
        ),
    ),
    additional_properties=False,
)

_CLAVATA = th.ObjectType(
    th.Property("base_url", th.URIType, default=DEFAULT_BASE_URLS["clavata"], description="Clavata REST gateway."),
    th.Property("api_key", th.StringType, required=True, secret=True, description="Clavata API key."),
    th.Property("policy_id", th.StringType, description="Only jobs evaluated against this policy."),
    additional_properties=False,
)

_TALONIC = th.ObjectType(
    th.Property("base_url", th.URIType, default=DEFAULT_BASE_URLS["talonic"], description="Talonic API."),
    th.Property("api_key", th.StringType, required=True, secret=True, description="Talonic API key (tlnc_...)."),
    additional_properties=False,
)

CONFIG_SCHEMA: dict = th.PropertiesList(
    th.Property(
        "start_date",
        th.DateTimeType,
        description="Ignore jobs created before this time (where the API tells creation time).",
    ),
    th.Property(
        "max_concurrent_requests",
        th.IntegerType,
        default=DEFAULT_MAX_CONCURRENT_REQUESTS,
        description="Upper bound on parallel HTTP requests per source.",
    ),
    th.Property(
        "connect_timeout",
        th.NumberType,
        default=10,
        description="Seconds to wait for a TCP/TLS connection before retrying.",
    ),
    th.Property(
        "read_timeout",
        th.NumberType,
        default=120,
        description=(
            "Most seconds from sending a request to having its complete response body; a slower "
            "response (a stall, a trickle) is a timeout, retried like one (large job payloads need more)."
        ),
    ),
    th.Property(
        "max_retries",
        th.IntegerType,
        default=6,
        description=(
            "Retries per request on 429, 5xx, resets and timeouts before the job is given up "
            "(at most 2 when the host refuses connections or is not in DNS)."
        ),
    ),
    th.Property(
        "max_retry_wait",
        th.NumberType,
        default=120,
        description="Cap in seconds on one wait between retries, including server-requested waits.",
    ),
    th.Property(
        "lookback_window",
        th.IntegerType,
        default=600,
        description=(
            "Seconds before the newest bookmarked job's creation time that each run re-reads, so a job "
            "that shows up late in a listing is still synced (once)."
        ),
    ),
    th.Property(
        "shard",
        th.ObjectType(
            th.Property("index", th.IntegerType, required=True, description="This instance's shard, 0..count-1."),
            th.Property("count", th.IntegerType, required=True, description="Number of shards."),
            additional_properties=False,
        ),
        description=(
            "Sync only the jobs of shard `index` of `count` (a stable hash of source and job ID), with a "
            "state of its own. N instances with indexes 0..N-1 together sync exactly what one would."
        ),
    ),
    th.Property(
        "max_listing_pages",
        th.IntegerType,
        default=5000,
        description="Most pages one job listing may take; a listing that goes on (or loops) is an error.",
    ),
    *RESPONSE_LIMIT_SETTINGS,
    th.Property("cognite", _COGNITE, description="Cognite Data Fusion entity matching."),
    th.Property("clavata", _CLAVATA, description="Clavata content-policy evaluation jobs."),
    th.Property("talonic", _TALONIC, description="Talonic document extraction jobs."),
).to_dict()
# A misspelt setting is an error, not a silently ignored key (the SDK adds its built-in settings,
# stream_maps, batch_config, ..., to `properties` before validating).
CONFIG_SCHEMA["additionalProperties"] = False

_BOUNDS = {
    "max_concurrent_requests": (1, 64),
    "max_retries": (0, 20),
    "connect_timeout": (0.1, 600),
    "read_timeout": (0.1, 3600),
    "max_retry_wait": (0, 3600),
    "lookback_window": (0, 30 * 86400),
    "max_listing_pages": (1, 1_000_000),
    **RESPONSE_LIMIT_BOUNDS,
}


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(setting: str, url: t.Any) -> str | None:
    """Refuse URLs that would send a credential in clear text, that carry one, or that are not
    URLs. Messages show the URL without userinfo or query (safe_url)."""
    if not isinstance(url, str):
        return None  # the schema reports the type
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError:
        return f"{setting}: {safe_url(url)} is not a valid URL"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"{setting}: {safe_url(url)} is not an http(s) URL"
    if "@" in parts.netloc:
        return (
            f"{setting}: holds a user name or password (user:password@host), which the tap would not use and "
            "must not print; give the host only, and the credentials in their own settings"
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        return (
            f"{setting}: plain http:// is refused for {parts.hostname!r} (credentials would travel "
            "unencrypted); use https://, or a loopback host for local tests"
        )
    return None


def read_config_file(path: str) -> dict[str, t.Any]:
    """One --config file as a JSON object, or ValueError with a message naming the file and what is
    wrong with it (never its content, which holds secrets)."""
    name = f"--config {safe_url(path)}"
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except IsADirectoryError:
        raise ValueError(f"{name}: is a directory, not a JSON config file") from None
    except FileNotFoundError:
        raise ValueError(f"{name}: no such file") from None
    except PermissionError:
        raise ValueError(f"{name}: cannot be read (permission denied)") from None
    except UnicodeDecodeError:
        raise ValueError(f"{name}: is not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"{name}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name}: is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError):
        raise ValueError(f"{name}: is not valid JSON") from None
    if not isinstance(config, dict):
        raise ValueError(f"{name}: must hold a JSON object of settings, got {type(config).__name__}")
    return config


def shape_errors(config: t.Any) -> list[str]:
    """Sections that are not objects: reported before the schema validator trips over them."""
    if not isinstance(config, Mapping):
        return ["the config must be a JSON object"]
    return [
        f"{name}: must be an object of settings, got {type(config[name]).__name__}"
        for name in SOURCES
        if name in config and not isinstance(config[name], dict)
    ]


def semantic_errors(config: t.Mapping[str, t.Any]) -> list[str]:
    """Checks the JSON schema cannot express. Returns messages naming the setting."""
    errors: list[str] = []
    for key, (low, high) in _BOUNDS.items():
        value = config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not low <= value <= high:
            errors.append(f"{key}: {value} is out of range ({low}..{high})")

    start_date = config.get("start_date")
    if isinstance(start_date, str):
        try:
            iso(start_date)
        except ValueError:
            errors.append(f"start_date: {start_date!r} is not an ISO 8601 date-time (e.g. 2025-01-01T00:00:00Z)")

    shard = config.get("shard")
    if isinstance(shard, Mapping):
        index, count = shard.get("index"), shard.get("count")
        if isinstance(count, int) and not isinstance(count, bool) and count < 1:
            errors.append(f"shard.count: {count} must be at least 1")
        elif isinstance(index, int) and isinstance(count, int) and not 0 <= index < count:
            errors.append(f"shard.index: {index} must be between 0 and shard.count - 1 ({count - 1})")

    if not any(isinstance(config.get(name), dict) for name in SOURCES):
        errors.append(
            "no source configured: add at least one of the sections " + ", ".join(f"'{name}'" for name in SOURCES)
        )

    for name in SOURCES:
        section = config.get(name)
        if not isinstance(section, dict):
            continue
        if err := check_url(f"{name}.base_url", section.get("base_url", DEFAULT_BASE_URLS[name])):
            errors.append(err)

    errors += _secret_format_errors(config)
    errors += short_secret_errors(config)

    cdf = config.get("cognite")
    if isinstance(cdf, dict):
        oauth_keys = ("client_id", "client_secret", "token_url", "scopes")
        given = [k for k in oauth_keys if cdf.get(k) not in (None, "", [])]
        if cdf.get("token") and given:
            errors.append(
                "cognite: give either cognite.token or the OAuth settings "
                f"({', '.join('cognite.' + k for k in oauth_keys)}), not both"
            )
        elif not cdf.get("token"):
            missing = [k for k in oauth_keys if k not in given]
            if missing:
                errors.append(
                    "cognite: authentication is missing: set cognite.token, or all of "
                    + ", ".join("cognite." + k for k in missing)
                )
        if isinstance(cdf.get("token_url"), str) and (err := check_url("cognite.token_url", cdf["token_url"])):
            errors.append(err)
        jobs = cdf.get("entity_matching_jobs") or []
        seen: set = set()
        for job in jobs if isinstance(jobs, list) else []:
            job_id = job.get("job_id") if isinstance(job, dict) else None
            if job_id in seen:
                errors.append(f"cognite.entity_matching_jobs: job_id {job_id} is listed twice")
            seen.add(job_id)
    return errors


def _secret_format_errors(config: t.Mapping[str, t.Any]) -> list[str]:
    """A pasted key with a newline or spaces would be refused by the HTTP layer later, in a
    message quoting it; say which setting is wrong now, without its value."""
    errors = []
    for name in SOURCES:
        section = config.get(name)
        if not isinstance(section, Mapping):
            continue
        values = [(f"{name}.{key}", section.get(key)) for key in sorted(SECRET_KEYS)]
        jobs = section.get("entity_matching_jobs")
        for index, job in enumerate(jobs if isinstance(jobs, list) else []):
            if isinstance(job, Mapping):
                values.append((f"{name}.entity_matching_jobs[{index}].job_token", job.get("job_token")))
        for setting, value in values:
            if isinstance(value, str) and (
                value != value.strip() or any(ord(ch) < 32 or ord(ch) == 127 for ch in value)
            ):
                errors.append(
                    f"{setting}: contains spaces or control characters at its ends or inside (a copy-paste slip?)"
                )
            elif isinstance(value, str) and setting.rsplit(".", 1)[-1] in HEADER_SECRETS and not value.isascii():
                errors.append(
                    f"{setting}: contains a character outside ASCII, which an HTTP header cannot carry "
                    "(a typographic quote or dash from a copy-paste?)"
                )
    return errors
