"""tap-jobresults: results of asynchronous ML/AI jobs (CDF entity matching, Clavata, Talonic)."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import typing as t
from datetime import datetime, timezone

from singer_sdk import Stream, Tap
from singer_sdk.exceptions import ConfigValidationError

from tap_jobresults import cli, sdk_hooks, settings
from tap_jobresults import state as state_format
from tap_jobresults.auth import ClientCredentials, StaticBearer
from tap_jobresults.client import ApiClient
from tap_jobresults.engine import Engine
from tap_jobresults.errors import StateError
from tap_jobresults.lifecycle import Failures, Policy, Shard, iso
from tap_jobresults.report import Reporter
from tap_jobresults.scrub import SECRETS, install_scrubbing
from tap_jobresults.sources import clavata, cognite, talonic
from tap_jobresults.streams import JobStream, ResultStream, SyncRunsStream
from tap_jobresults.writer import SingerWriter

if t.TYPE_CHECKING:
    from types import FrameType


logger = logging.getLogger("tap-jobresults")

SOURCE_STREAMS: dict[str, tuple[type[Stream], ...]] = {
    "cognite": cognite.STREAMS,
    "clavata": clavata.STREAMS,
    "talonic": talonic.STREAMS,
}


def budget_bytes(max_response_mb: float) -> int:
    """Bytes of job bodies and records held at once (engine.ByteBudget): two of the largest
    bodies allowed, at most MAX_BUDGET_MB; a larger job is fetched alone."""
    return int(min(2 * max_response_mb, MAX_BUDGET_MB) * (1 << 20))


MAX_BUDGET_MB = 128


class TapJobResults(Tap):
    """Results of asynchronous ML/AI jobs: CDF entity matching, Clavata content policies, Talonic extraction."""

    name = "tap-jobresults"
    config_jsonschema = settings.CONFIG_SCHEMA
    message_writer_class = SingerWriter
    # The catalog depends on the config (only active sources have streams), so discovery
    # validates the config too instead of failing later on a half-valid one.
    dynamic_catalog = True

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        self.failures = Failures()
        self.reporter = Reporter()
        # Its byte budget follows max_response_mb: set from the config in discover_streams.
        self.engine = Engine(
            self, self.failures, budget_bytes(settings.CONFIG_SCHEMA["properties"]["max_response_mb"]["default"])
        )
        self.run_started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # The SDK has set up logging by now (console handler, and any SINGER_SDK_LOG_CONFIG file
        # with handlers of its own): scrub every record at creation, and filter every handler too.
        install_scrubbing()
        super().__init__(*args, **kwargs)
        install_scrubbing()  # loggers and handlers created while the SDK set the tap up
        sdk_hooks.install_state_writer(self)
        cli.collect_from_here()

    # -- config -------------------------------------------------------------------------------------

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        self._register_secrets()
        errors = settings.shape_errors(self.config)
        if not errors:  # the SDK's validator fills defaults and crashes on a section that is not an object
            errors = self._schema_errors()
            errors += settings.semantic_errors(self.config)
        if errors and raise_errors:
            raise ConfigValidationError("Config validation failed", errors=[SECRETS.scrub(e) for e in errors])
        return errors

    def _schema_errors(self) -> list[str]:
        """What the SDK's _validate_config does (validate, filling defaults), with messages that
        never quote a secret setting's value, whatever its type (the registry only knows strings)."""
        return [settings.schema_error_message(error) for error in sdk_hooks.config_schema_errors(self)]

    def _register_secrets(self) -> None:
        """Every string under a secret key, whatever shape the config gives it: validation errors
        quote the values they reject, and those messages are scrubbed with this registry."""

        def walk(node: t.Any, secret: bool) -> None:
            if isinstance(node, str) and secret:
                SECRETS.add(node)
            elif isinstance(node, t.Mapping):
                for key, value in node.items():
                    walk(value, secret or key in settings.SECRET_KEYS)
            elif isinstance(node, list):
                for value in node:
                    walk(value, secret)

        walk(self.config, False)

    # -- streams -------------------------------------------------------------------------------------

    def _number(self, name: str) -> float:
        """A numeric setting; null means the default. The SDK reads JSON numbers as Decimal."""
        value = self.config.get(name)
        return float(settings.CONFIG_SCHEMA["properties"][name]["default"] if value is None else value)

    def _client(self, vendor: str, section: t.Mapping[str, t.Any]) -> ApiClient:
        timeouts: dict[str, t.Any] = {
            "connect_timeout": self._number("connect_timeout"),
            "read_timeout": self._number("read_timeout"),
            "max_retries": int(self._number("max_retries")),
            "max_retry_wait": self._number("max_retry_wait"),
            "max_response_mb": self._number("max_response_mb"),
        }
        width = int(self._number("max_concurrent_requests"))
        base_url = section.get("base_url") or settings.DEFAULT_BASE_URLS[vendor]
        auth: t.Any
        refresh = None
        if vendor == "cognite":
            if section.get("token"):
                auth = StaticBearer(section["token"])
            else:
                oauth = ClientCredentials(
                    source="cognite",
                    token_url=section["token_url"],
                    client_id=section["client_id"],
                    client_secret=section["client_secret"],
                    scopes=list(section["scopes"]),
                    audience=section.get("audience"),
                    timeouts=timeouts,
                )
                auth, refresh = oauth, oauth.refresh
        else:
            auth = StaticBearer(section["api_key"])
        return ApiClient(
            vendor,
            base_url,
            setting=f"{vendor}.base_url",
            auth=auth,
            refresh_auth=refresh,
            pool_size=width,
            honour_reset_header=vendor == "talonic",
            **timeouts,
        )

    def _policy(self) -> Policy:
        shard = self.config.get("shard")
        start_date = self.config.get("start_date")
        return Policy(
            run_started=self.run_started,
            lookback=self._number("lookback_window"),
            shard=Shard(int(shard["index"]), int(shard["count"])) if isinstance(shard, dict) else None,
            start_date=iso(start_date) if start_date else None,
        )

    def discover_streams(self) -> list[Stream]:
        self.engine.budget.limit = budget_bytes(self._number("max_response_mb"))
        streams: list[Stream] = []
        width = int(self._number("max_concurrent_requests"))
        max_pages = int(self._number("max_listing_pages"))
        policy = self._policy()
        for vendor, stream_types in SOURCE_STREAMS.items():
            section = self.config.get(vendor)
            if not isinstance(section, dict):
                continue  # a source is active when its section is present
            client = self._client(vendor, section)
            parents: dict[type, JobStream] = {}
            for stream_type in stream_types:
                if issubclass(stream_type, JobStream):
                    source = stream_type.source_class(client, section, policy, max_pages)
                    parent = stream_type(self, source, self.failures, width, self.reporter, self.engine)
                    parents[stream_type] = parent
                    streams.append(parent)
                elif issubclass(stream_type, ResultStream):
                    result_stream = stream_type(self)
                    result_stream.parent = parents[t.cast("type", stream_type.parent_stream_type)]
                    result_stream.parent.result_streams.append(result_stream)
                    streams.append(result_stream)
        streams.append(SyncRunsStream(self, self.reporter))
        return streams

    @classmethod
    def cb_config(cls, ctx: t.Any, param: t.Any, value: tuple[str, ...]) -> t.Any:  # type: ignore[override]
        """The CLI's --config files: one that is a directory, unreadable or not a JSON object is
        refused here, naming it, instead of ending in a traceback."""
        for path in value:
            if path != "ENV":
                try:
                    settings.read_config_file(path)
                except ValueError as exc:
                    cls.logger.error("%s. Nothing was synced.", exc)
                    sys.exit(1)
        return super().cb_config(ctx, param, value)

    # -- state ---------------------------------------------------------------------------------------

    @classmethod
    def invoke(cls, *, state: t.IO[str] | None = None, **kwargs: t.Any) -> None:  # type: ignore[override]
        """The CLI: a state file that is not JSON, or not a state this tap wrote, is refused here,
        with a message naming it, before anything is synced."""
        if state is not None:
            where = f"state file {getattr(state, 'name', '')}".strip()
            dropped = state_format.Dropped()
            try:
                raw = getattr(state, "buffer", None)
                checked = state_format.parse(raw.read() if raw is not None else state.read(), where, dropped)
            except StateError as exc:
                cls.logger.error("%s. Nothing was synced; fix or reset the state.", exc)
                sys.exit(1)
            warning = dropped.message(where)
            if warning:
                cls.logger.warning("%s", warning)
            state = io.StringIO(json.dumps(checked))
        super().invoke(state=state, **kwargs)

    def load_state(self, state: dict[str, t.Any]) -> None:
        """Only what the tap owns is loaded (state.py); the format is the current one from here on,
        so every STATE written, `--test`'s and a record-limited run's too, is read back as written."""
        dropped = state_format.Dropped()
        checked = state_format.check(state, dropped=dropped)
        warning = dropped.message("state")
        if warning:
            logger.warning("%s", warning)
        super().load_state(checked)
        plain = self._plain_state()
        plain["format_version"] = state_format.FORMAT_VERSION
        # Always written (null: no shard), never removed: see the bookmark format in lifecycle.py.
        # A state that names no shard is this config's (sync_all refuses one that names another).
        plain["shard"] = checked["shard"] if checked.get("shard") is not None else self._configured_shard()

    def _configured_shard(self) -> list[int] | None:
        shard = self.config.get("shard")
        return [int(shard["index"]), int(shard["count"])] if isinstance(shard, dict) else None

    def _plain_state(self) -> dict[str, t.Any]:
        """The tap state as the plain dict it is (the SDK types it as bookmarks only)."""
        return t.cast("dict[str, t.Any]", self.state)

    def _state_fits_config(self) -> None:
        """A state written under one sharding is only valid under the same one: with another shard
        count, jobs change hands, and a bookmark taken over one set of jobs would hide others."""
        current = self._configured_shard()
        state = self._plain_state()
        stored = state.get("shard")
        if stored is not None and stored != current and state.get("bookmarks"):
            written = f"shard {stored[0]} of {stored[1]}"
            now = f"shard {current[0]} of {current[1]}" if current else "no shard"
            raise StateError(
                f"state: written by {written}, but the config says {now}. Jobs change shards when the shard "
                "count changes: clear the state of every shard (meltano state clear ...) and let each sync again"
            )
        state["shard"] = current

    # -- run -----------------------------------------------------------------------------------------

    # The SDK marks sync_all final; it is extended (not replaced) because only after every stream
    # has run can the tap tell whether some job could not be synced, and a cron user needs that
    # as a non-zero exit code, with the list of jobs concerned as the last log lines.
    def sync_all(self) -> None:  # type: ignore[misc]
        try:
            self._state_fits_config()
        except StateError as exc:
            logger.error("%s. Nothing was synced.", exc)
            sys.exit(1)
        try:
            super().sync_all()
            t.cast("t.Any", self.message_writer).flush()
        except BrokenPipeError:
            # The loader stopped reading: nothing more can be delivered. Its last confirmed STATE is
            # the resume point; stdout goes nowhere from here so the interpreter can exit quietly.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            logger.error(
                "The loader stopped reading the tap's output (broken pipe): the run ended early. "
                "Check the loader's log; the next run resumes from the last state it confirmed."
            )
            sys.exit(1)
        finally:
            sdk_hooks.close_counters()
        logger.info("%s", self.reporter.summary())
        if self.failures:
            logger.error(
                "Sync finished with %d problem(s); the jobs concerned were not bookmarked and are "
                "fetched again next run:\n  %s",
                len(self.failures.items),
                "\n  ".join(self.failures.items),
            )
            sys.exit(1)
        logger.info("Sync complete: every stream finished and its state was written.")

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        # The SDK exits 0 here; a cron user must be able to tell an interrupted run from a
        # complete one. Signals are handled on the main thread, which is the one writer: when the
        # signal comes while bytes are going out, the write is finished first (the writer calls
        # `_terminate` then), so stdout always ends on a whole message.
        writer = t.cast("t.Any", self.message_writer)
        if getattr(writer, "busy", False):
            writer.on_signal = self._terminate
            writer.pending_signal = signum
            return
        self._terminate(signum)

    def _terminate(self, signum: int) -> None:
        # The state written is a safe resume point: bookmarks move only after a job's records.
        try:
            sdk_hooks.write_tap_state(self)  # flushes the records before it, then itself
        except BaseException:  # noqa: S110 - stdout may be gone (the reader quit): exit all the same
            pass
        finally:
            logger.error(
                "Interrupted by signal %d: stopped before the sync finished. The last STATE message "
                "is a safe resume point; the next run continues from it.",
                signum,
            )
            logging.shutdown()
            os._exit(128 + signum)  # 143 SIGTERM, 130 SIGINT; worker threads may be mid-request: no waiting
