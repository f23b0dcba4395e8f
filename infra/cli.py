"""The `omnihub` command."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import click
from tabulate import tabulate

from infra.processes import tune_collector
from infra.settings import Settings, SettingsError, load_settings

log = logging.getLogger("omnihub")

HUB_STATE_FILE = "hub.json"  # where a running hub says how to reach its broker and query endpoint


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


def _hub_state(settings: Settings) -> dict:
    """The running hub's state ({} if no hub runs here); a file left by a hub that died is an error."""
    from infra.hub import HubStateStale, read_state_file

    try:
        return read_state_file(Path(settings.data_dir) / HUB_STATE_FILE)
    except HubStateStale as error:
        raise click.ClickException(str(error)) from None


def _bootstrap(settings: Settings) -> str:
    if settings.kafka.bootstrap_servers:
        return settings.kafka.bootstrap_servers
    state = _hub_state(settings)
    if "bootstrap_servers" not in state:
        raise click.ClickException("no Kafka configured and no running hub found: start `omnihub run`, "
                                   "or set OMNIHUB_KAFKA__BOOTSTRAP_SERVERS")
    return state["bootstrap_servers"]


@click.group()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML settings file (default: $OMNIHUB_CONFIG, else ./omnihub.toml if present)")
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, verbose: bool) -> None:
    """Omnihub: one view of each customer across every channel."""
    from infra import logs

    logs.install(logging.DEBUG if verbose else logging.INFO)
    try:
        ctx.obj = {"settings": load_settings(config_file)}
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


@cli.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run one Faust worker (streams/) in the foreground."""
    from streams.app import run_worker

    settings = _settings(ctx)
    sys.argv = [sys.argv[0]]  # Faust's worker parses argv; ours are not its options
    run_worker(settings, _bootstrap(settings))


def _print_table(columns: list[str], rows: list) -> None:
    click.echo(tabulate(rows, headers=columns, tablefmt="simple", disable_numparse=True))


async def _demo(settings: Settings, timeout: float) -> None:
    from connectors.config import bundled_configs
    from connectors.runtime import Connector, sample_path
    from infra.hub import Hub
    from sinks.named_queries import named_query, stored_counts

    async with Hub(settings) as hub:
        click.echo(f"broker {hub.bootstrap}; Faust worker pid {hub.worker.process.pid}; ClickHouse "
                   f"{settings.clickhouse.url or settings.clickhouse.embedded_path}")
        accepted = rejected = 0
        for config_path in bundled_configs():
            # The webhook channel's sample is replayed through its mapping: the demo needs no HTTP client.
            connector = Connector(settings, hub.bootstrap, config_path)
            report = await connector.run_file(sample_path(connector))
            click.echo(report.describe())
            accepted, rejected = accepted + report.accepted, rejected + report.rejected
        deadline = time.monotonic() + timeout
        while True:
            stored, dead = stored_counts(hub.client)
            if stored >= accepted and dead >= rejected:
                break
            if time.monotonic() > deadline:
                raise click.ClickException(f"timed out: ClickHouse has {stored}/{accepted} events and "
                                           f"{dead}/{rejected} dead letters; see {hub.worker.log_file}")
            await asyncio.sleep(0.5)
        result = hub.client.query(named_query("timeline"))
        click.echo(f"\nThe customer timeline in ClickHouse (timeline_current: ids resolved across channels, {len(result.result_rows)} rows):")
        _print_table(list(result.column_names), result.result_rows)
        result = hub.client.query(named_query("dead_letters"))
        click.echo(f"\nDead letters in ClickHouse ({len(result.result_rows)} rows):")
        _print_table(list(result.column_names), result.result_rows)


@cli.command()
@click.option("--timeout", default=120.0, show_default=True, help="seconds to wait for the orders to reach ClickHouse")
@click.pass_context
def demo(ctx: click.Context, timeout: float) -> None:
    """Run every bundled connector's sample end to end on fresh embedded data and print what ClickHouse returns."""
    settings = _settings(ctx)
    demo_dir = Path(settings.data_dir) / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    updates = {"data_dir": demo_dir, "console": settings.console.model_copy(update={"enabled": False})}
    if settings.embedded_clickhouse:
        updates["clickhouse"] = settings.clickhouse.model_copy(update={"embedded_path": demo_dir / "chdb", "query_port": 0})
    asyncio.run(_demo(settings.model_copy(update=updates), timeout))


@cli.command()
@click.option("--connector", "connector_configs", multiple=True,
              help="connector config (path or bundled name) to run once the hub is up (repeatable)")
@click.pass_context
def run(ctx: click.Context, connector_configs: tuple[str, ...]) -> None:
    """Run the hub until interrupted: broker (embedded unless configured), Faust worker, sink, query endpoint."""
    from infra.hub import Hub

    from infra.hub import HubStateStale, read_state_file
    from infra.supervision import ChildKeepsFailing

    settings = _settings(ctx)
    state_file = Path(settings.data_dir) / HUB_STATE_FILE
    try:
        running = read_state_file(state_file)
    except HubStateStale as error:
        log.warning("%s; replacing it", str(error).split(";")[0])
        running = {}
    if running:
        raise click.ClickException(f"a hub is already running on {settings.data_dir} (pid {running['pid']}): "
                                   "stop it first (one hub per data folder)")

    async def main():  # -> SinkStats
        async with Hub(settings, state_file=state_file) as hub:
            for signum in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().add_signal_handler(signum, hub.request_stop)
            click.echo(f"hub running (pid {os.getpid()}): broker {hub.bootstrap} ({hub.status()['storage']}), "
                       f"queries {hub.query_server.address if hub.query_server else 'direct'}"
                       + (f", console {hub.console.address}" if hub.console else "") + "; Ctrl-C stops it")
            loaded = [_load_connector(config, settings, hub.bootstrap) for config in connector_configs]
            runs = asyncio.create_task(_run_connectors(settings, hub.bootstrap, loaded, hub.stopping))
            try:
                await hub.wait()
            finally:
                hub.request_stop()
                await asyncio.gather(runs, return_exceptions=True)
        return hub.sink.stats

    try:
        stats = asyncio.run(main())
    except ChildKeepsFailing as error:
        raise click.ClickException(f"hub stopped: {error}") from None
    click.echo(f"hub stopped; sink read {stats.records_read:,} records = stored {stats.records_read - stats.records_refused:,} "
               f"+ refused by ClickHouse {stats.records_refused:,} (dead-lettered)")


@cli.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Each component of the running hub, consumer lag per group and topic, and each one's last error."""
    from infra.kafka import consumer_lag

    settings = _settings(ctx)
    state = _hub_state(settings)
    if not state:
        raise click.ClickException(f"no hub running on {settings.data_dir}: start `omnihub run`")
    age = time.time() - state["updated_at"]
    click.echo(f"hub pid {state['pid']}, up {_duration(time.time() - state['started_at'])}, broker "
               f"{state['bootstrap_servers']} ({state['storage']}, id {state['broker_id']}); state {age:.0f} s old")
    if state.get("console_url") or state.get("query_url"):
        click.echo(f"console {state.get('console_url') or 'off'}; queries (and ClickHouse's HTTP interface) "
                   f"{state.get('query_url') or 'direct to the ClickHouse server'}")
    _print_table(["component", "state", "pid", "restarts", "last exit", "last error"],
                 [[c["name"], c["state"], c.get("pid") or "", c["restarts"], c.get("last_exit", ""),
                   (c.get("last_error") or "")[:100]] for c in state["components"]])
    from streams.app import resolution_group

    groups = [resolution_group(settings), settings.sink.group_id]
    try:
        lag = asyncio.run(consumer_lag(state["bootstrap_servers"], groups))
    except Exception as error:
        raise click.ClickException(f"broker {state['bootstrap_servers']} did not answer: {error}") from None
    click.echo("")
    _print_table(["consumer group", "topic", "committed", "end", "lag"],
                 [[group, topic, committed, end, end - committed] for group, topic, committed, end in lag])


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


@cli.group()
def connectors() -> None:
    """Channel connectors (connectors/): one YAML config per channel."""


def _load_connector(config: str, settings: Settings, bootstrap: str = ""):
    from connectors.config import ConfigError, find_config
    from connectors.runtime import Connector

    try:
        return Connector(settings, bootstrap, find_config(config))
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@connectors.command("list")
@click.pass_context
def connectors_list(ctx: click.Context) -> None:
    """The bundled connector configs."""
    from connectors.config import bundled_configs

    rows = []
    for path in bundled_configs():
        config = _load_connector(str(path), _settings(ctx)).config
        rows.append([config.name, config.channel, config.source.type, config.topic, config.description])
    _print_table(["name", "channel", "source", "topic", "description"], rows)


@connectors.command("check")
@click.argument("config")
@click.argument("sample", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--show", default=3, show_default=True, help="how many mapped records to print")
@click.option("--strict", is_flag=True, help="exit with status 1 if any record is rejected")
@click.pass_context
def connectors_check(ctx: click.Context, config: str, sample: str | None, show: int, strict: bool) -> None:
    """Dry run: check CONFIG (a path or a bundled name), map SAMPLE (default: the config's own file)
    and print mapped records and rejects. Touches no Kafka."""
    from connectors.runtime import sample_records

    settings = _settings(ctx)
    connector = _load_connector(config, settings)
    try:
        path, records = sample_records(connector, Path(sample) if sample else None)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    pattern = settings.topics.channel_pattern
    if not re.search(pattern, connector.config.topic):
        click.echo(f"warning: topic {connector.config.topic} does not match topics.channel_pattern {pattern!r}: "
                   "streams/ will not read it", err=True)
    from connectors.config import REVENUE_EVENT_TYPES, revenue_warnings

    for warning in revenue_warnings(connector.config):
        click.echo(f"warning: {warning}", err=True)
    accepted = rejected = 0
    without_amount = Counter()
    for record, event, reason in connector.preview(records):
        if reason is None:
            accepted += 1
            if event["event_type"] in REVENUE_EVENT_TYPES and event.get("total_minor") is None:
                without_amount[event["event_type"]] += 1
            if accepted <= show:
                click.echo(f"{record.position}: accepted\n  " + json.dumps(event, default=str, ensure_ascii=False))
        else:
            rejected += 1
            click.echo(f"{record.position}: REJECTED: {reason}")
    for event_type, count in sorted(without_amount.items()):
        click.echo(f"warning: {count} accepted {event_type} record(s) have no total_minor: they count 0 in every "
                   "revenue report", err=True)
    click.echo(f"{connector.config.name}: config OK; {path}: read {accepted + rejected} = accepted {accepted} + rejected {rejected}")
    if strict and rejected:
        ctx.exit(1)


async def _run_connectors(settings: Settings, bootstrap: str, configs: list, stop: asyncio.Event,
                          source: Path | None = None, source_dir: Path | None = None, from_start: bool = False,
                          follow: bool | None = None) -> list:
    from connectors.runtime import run_connector

    runs = []
    for connector in configs:
        path = source
        if source_dir is not None:
            candidates = [source_dir / f"{connector.config.name}.{suffix}" for suffix in ("jsonl", "csv", "json")]
            path = next((c for c in candidates if c.is_file()), None)
            if path is None:
                click.echo(f"{connector.config.name}: no {connector.config.name}.jsonl, .csv or .json in {source_dir}, skipped")
                continue
        runs.append(run_connector(settings, bootstrap, connector.config_path, path, from_start=from_start,
                                  follow=follow, stop=stop, bar_position=len(runs)))
    reports = await asyncio.gather(*runs)
    for report in reports:
        click.echo(report.describe())
    return reports


@connectors.command("run")
@click.argument("configs", nargs=-1)
@click.option("--all", "run_all", is_flag=True, help="every bundled connector")
@click.option("--source", type=click.Path(exists=True, dir_okay=False),
              help="read this file instead of the config's source (replays a file through a webhook connector's mapping)")
@click.option("--source-dir", type=click.Path(exists=True, file_okay=False),
              help="read <name>.jsonl, <name>.csv or <name>.json from this folder for each connector (what `omnihub generate` writes)")
@click.option("--from-start", is_flag=True, help="ignore the committed position and read files from their start")
@click.option("--follow/--no-follow", default=None, help="keep reading JSON Lines files as they grow (default: the config's)")
@click.pass_context
def connectors_run(ctx: click.Context, configs: tuple[str, ...], run_all: bool, source: str | None,
                   source_dir: str | None, from_start: bool, follow: bool | None) -> None:
    """Run connectors: file sources read to their end (resuming where the last run committed),
    webhooks serve until Ctrl-C. Prints read = accepted + rejected for each."""
    from connectors.config import bundled_configs

    settings = _settings(ctx)
    if run_all:
        configs = configs + tuple(str(p) for p in bundled_configs())
    if not configs:
        raise click.UsageError("name at least one connector config, or --all")
    if source and len(configs) > 1:
        raise click.UsageError("--source reads one file: name one connector, or use --source-dir")
    bootstrap = _bootstrap(settings)
    loaded = [_load_connector(config, settings, bootstrap) for config in configs]
    tune_collector()

    async def main() -> list:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        return await _run_connectors(settings, bootstrap, loaded, stop, Path(source) if source else None,
                                     Path(source_dir) if source_dir else None, from_start, follow)

    try:
        reports = asyncio.run(main())
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if not all(report.reconciles for report in reports):
        ctx.exit(1)


@cli.command()
@click.option("--out", type=click.Path(file_okay=False), default="scenario", show_default=True, help="folder to write")
@click.option("--customers", default=10_000, show_default=True, help="people behind the events")
@click.option("--events", default=100_000, show_default=True, help="channel events in the 24 hours")
@click.option("--seed", default=24, show_default=True, help="same seed, same files")
@click.option("--malformed-rate", default=0.005, show_default=True, help="share of records written malformed")
def generate(out: str, customers: int, events: int, seed: int, malformed_rate: float) -> None:
    """Write the 24-hour best-customer promotion in each channel's raw format, with its ground truth."""
    from connectors.scenario import generate as write_scenario

    started = time.monotonic()
    try:
        manifest = write_scenario(Path(out), customers, events, seed, malformed_rate)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    rows = [[name, c["file"], c["records"], c["valid"], c["malformed"]] for name, c in manifest["channels"].items()]
    _print_table(["connector", "file", "records", "valid", "malformed"], rows)
    click.echo(f"{events:,} events of {customers:,} customers written to {out} in {time.monotonic() - started:.1f} s "
               f"(ground_truth.csv, people.csv, products.csv, campaigns.json, manifest.json); "
               f"load them with: omnihub connectors run --all --source-dir {out}")


@cli.group()
def clickhouse() -> None:
    """ClickHouse schema."""


@clickhouse.command("migrate")
@click.pass_context
def clickhouse_migrate(ctx: click.Context) -> None:
    """Apply pending DDL from sinks/sql (idempotent)."""
    from infra.clickhouse import open_client
    from sinks.migrate import migrate

    applied = migrate(open_client(_settings(ctx)))
    click.echo(f"applied: {', '.join(applied)}" if applied else "up to date")


def _read_only_query(settings: Settings, sql: str, parameters: dict) -> tuple[list[str], list]:
    """(columns, rows) of one read statement: through a running hub when it owns embedded chDB, else
    direct; either way in a session of its own, with limits (sinks/read_only.py)."""
    query_url = _hub_state(settings).get("query_url") if settings.embedded_clickhouse else None
    if query_url:  # a running hub owns the embedded folder: ask it
        headers = {"Content-Type": "application/json"}
        if settings.clickhouse.query_token:
            headers["Authorization"] = f"Bearer {settings.clickhouse.query_token}"
        request = urllib.request.Request(query_url + "/query", data=json.dumps({"sql": sql, "parameters": parameters}).encode(),
                                         method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=settings.clickhouse.query_max_seconds + 30) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise click.ClickException(json.loads(error.read()).get("error", str(error))) from None
        except (urllib.error.URLError, TimeoutError) as error:
            raise click.ClickException(f"the hub's query endpoint {query_url} did not answer: {error}") from None
        return answer["columns"], answer["rows"]
    from sinks.read_only import RefusedQuery, run_read_only

    try:
        return run_read_only(settings, sql, parameters)
    except RefusedQuery as error:
        raise click.ClickException(f"refused: {error}") from None
    except Exception as error:
        raise click.ClickException(str(error)) from None


def _parameters(params: tuple[str, ...]) -> dict:
    for param in params:
        if "=" not in param:
            raise click.UsageError(f"--param {param!r}: expected name=value")
    return dict(p.split("=", 1) for p in params)


@clickhouse.command("roles")
@click.option("--apply", "apply_", is_flag=True, help="run it against the configured ClickHouse server")
@click.pass_context
def clickhouse_roles(ctx: click.Context, apply_: bool) -> None:
    """Print (or --apply) the SQL creating a role per department, each granted only what it may read."""
    from sinks.migrate import role_statements

    settings = _settings(ctx)
    statements = role_statements(settings.clickhouse.database)
    if not apply_:
        click.echo(";\n".join(statements) + ";")
        return
    if settings.embedded_clickhouse:
        raise click.ClickException("embedded chDB has no access control: roles need a ClickHouse server (clickhouse.url)")
    from infra.clickhouse import open_client

    client = open_client(settings, create_database=False)
    for statement in statements:
        client.command(statement)
    click.echo(f"applied {len(statements)} statements")


@cli.command()
@click.argument("sql_or_name")
@click.option("--param", "params", multiple=True, help="name=value for {name:Type} placeholders")
@click.pass_context
def query(ctx: click.Context, sql_or_name: str, params: tuple[str, ...]) -> None:
    """Run a named query (sinks/sql/queries/NAME.sql, e.g. purchasing_sku_demand) or read-only SQL,
    and print the result as a table."""
    from sinks.named_queries import named_query, query_names

    sql = named_query(sql_or_name) if sql_or_name in query_names() else sql_or_name
    _print_table(*_read_only_query(_settings(ctx), sql, _parameters(params)))


@cli.command()
@click.argument("department")
@click.option("--param", "params", multiple=True,
              help="name=value, e.g. campaign=tv-best24 (default: the latest announced campaign; capacity: console.capacity_events_per_minute)")
@click.option("--format", "fmt", type=click.Choice(["text", "html", "csv", "json"]), default="text", show_default=True,
              help="html: one self-contained file with its charts; csv: a file per query (needs --output, a folder)")
@click.option("--output", type=click.Path(), default=None, help="file (html, json, text) or folder (csv); default: standard output")
@click.pass_context
def report(ctx: click.Context, department: str, params: tuple[str, ...], fmt: str, output: str | None) -> None:
    """Every named query of a department (kpis, it, marketing, purchasing, operations, finance, service), as a
    table on the terminal or as a report a person can send."""
    from console.departments import DEPARTMENTS, collect, department_parameters, render_csv, render_html, render_json

    settings = _settings(ctx)
    if department not in DEPARTMENTS:
        raise click.UsageError(f"no department {department!r}; departments: {', '.join(DEPARTMENTS)}")
    if fmt == "csv" and not output:
        raise click.UsageError("--format csv writes one file per query: give --output FOLDER")

    def run_query(sql: str, parameters: dict):
        return _read_only_query(settings, sql, parameters)

    parameters = department_parameters(run_query, settings.console.capacity_events_per_minute, _parameters(params))
    sections = collect(department, run_query, parameters)
    if fmt == "csv":
        folder = Path(output)
        folder.mkdir(parents=True, exist_ok=True)
        for section in sections:
            if not section.skipped:
                (folder / f"{section.name}.csv").write_text(render_csv(section))
        click.echo(f"{sum(1 for s in sections if not s.skipped)} CSV files written to {folder}"
                   + "".join(f"\n  {s.name}: not written, {s.skipped}" for s in sections if s.skipped))
        return
    if fmt == "text":
        lines = [f"{department} report with " + ", ".join(f"{k}={v}" for k, v in sorted(parameters.items()))]
        for section in sections:
            lines.append(f"\n== {section.name}: {section.title}")
            lines.append(f"(skipped: {section.skipped}; give --param)" if section.skipped else
                         tabulate(section.rows, headers=section.columns, tablefmt="simple", disable_numparse=True))
        document = "\n".join(lines) + "\n"
    else:
        document = render_html(department, sections, parameters) if fmt == "html" else render_json(department, sections, parameters)
    if output:
        Path(output).write_text(document)
        click.echo(f"{department} report written to {output}")
    else:
        click.echo(document, nl=False)


@cli.group()
def campaigns() -> None:
    """Campaigns marketing announces (window, audience, media cost, expected visitors)."""


@campaigns.command("announce")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def campaigns_announce(ctx: click.Context, file: str) -> None:
    """Publish the campaigns of a JSON file (as `omnihub generate` writes campaigns.json) to the campaigns
    topic; the sink loads them into ClickHouse. A file with any invalid campaign publishes nothing."""
    from kafka import KafkaProducer

    from connectors.campaigns import read_announcements
    from schemas.serde import codec

    settings = _settings(ctx)
    try:
        announcements = read_announcements(Path(file))
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    encode = codec("campaign", settings.schemas.registry_url, settings.topics.campaigns).encode
    producer = KafkaProducer(bootstrap_servers=_bootstrap(settings), acks="all")
    try:
        for campaign in announcements:
            producer.send(settings.topics.campaigns, encode(campaign.to_avro()), key=campaign.campaign_id.encode()).get(timeout=30)
    finally:
        producer.close()
    click.echo(f"announced {', '.join(c.campaign_id for c in announcements)} on {settings.topics.campaigns}")


@cli.group()
def identity() -> None:
    """Identity resolution commands (sent to the Faust worker through the identity-commands topic)."""


PHONE_LIKE = re.compile(r"^\+?[\d\s().-]{6,}$")   # what is not an email, kind:value or phone is a customer id


def _forget_command(settings: Settings, who: str, reason: str) -> dict:
    from infra.identity_commands import identifier_graph

    """A customer id, or an identifier (kind:value, or a bare email or phone) turned into its token key
    here: the command topic never carries the value."""
    command = {"command": "forget", "reason": reason, "request_id": str(uuid.uuid4())}
    text = who.strip()
    if re.match(r"^(email|phone|loyalty_id|web_account|social_handle):", text):
        pass
    elif "@" in text:
        text = f"email:{text}"
    elif PHONE_LIKE.match(text):
        text = f"phone:{text}"
    else:
        return {**command, "customer_id": text}
    try:
        return {**command, "identifier": identifier_graph(settings).identifier_key(text)}
    except ValueError as error:
        raise click.UsageError(str(error)) from None


@cli.command()
@click.argument("who")
@click.option("--reason", default="erasure request", show_default=True)
@click.option("--timeout", default=60.0, show_default=True, help="seconds to wait for the worker to confirm")
@click.pass_context
def forget(ctx: click.Context, who: str, reason: str, timeout: float) -> None:
    """Erase a person, named by customer id or by any identifier (alice@x.com, +33612345678,
    loyalty_id:LC-1, social_handle:facebook:alice): the worker drops their identifiers from the identity
    graph and destroys the keys their data was sealed under (infra/vault.py), tombstones their profile and
    publishes an erasure, on which the sink deletes their rows in ClickHouse. Waits for the worker's answer."""
    settings = _settings(ctx)
    command = _forget_command(settings, who, reason)
    erasure = _send_identity_command(settings, command, answer_topic=settings.topics.customer_erasures,
                                     timeout=timeout)
    if not erasure["customer_ids"]:
        click.echo(f"nobody is known as {who}: nothing to forget" + (" (the identifier's key, if any, was destroyed)"
                                                                   if "identifier" in command else ""))
        return
    click.echo(f"forgotten: customer {erasure['customer_id']} ({len(erasure['customer_ids'])} id(s): "
               f"{', '.join(erasure['customer_ids'])}); {erasure['identifiers_removed']} identifier(s) removed and "
               "their keys destroyed")
    click.echo(_wait_for_clickhouse_erasure(settings, erasure, timeout))


ERASED_ROWS = ("SELECT (SELECT count() FROM customer_identities FINAL WHERE customer_id IN {ids:Array(String)} AND deleted = 0)"
               " + (SELECT count() FROM event_details WHERE customer_id IN {ids:Array(String)})"
               " + (SELECT count() FROM dead_letters WHERE hasAny(identifier_tokens, {tokens:Array(String)})) AS left")


def _wait_for_clickhouse_erasure(settings: Settings, erasure: dict, timeout: float) -> str:
    """Until the sink has deleted the person's rows (customer identities, event details, dead letters)."""
    if settings.embedded_clickhouse and not _hub_state(settings).get("query_url"):
        return "ClickHouse not checked: no running hub answers queries here; its sink deletes their rows when it reads the erasure"
    parameters = {"ids": erasure["customer_ids"], "tokens": erasure["identifier_tokens"] or [""]}
    deadline = time.monotonic() + timeout
    while True:
        try:
            left = _read_only_query(settings, ERASED_ROWS, parameters)[1][0][0]
        except click.ClickException as error:
            return f"ClickHouse not checked: {error.message}"
        if not left:
            return "ClickHouse: their identities, event details and dead letters are deleted"
        if time.monotonic() > deadline:
            raise click.ClickException(f"ClickHouse still holds {left} of their rows after {timeout:.0f} s: is the sink running?")
        time.sleep(0.5)


def _send_identity_command(settings: Settings, command: dict, answer_topic: str | None = None,
                           timeout: float = 60.0) -> dict | None:
    """Send a command to the worker; with answer_topic, wait for the record that carries its request_id."""
    from kafka.errors import KafkaError

    bootstrap = _bootstrap(settings)
    # The one line below says what happened; the client's own connection errors would say it again.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        from kafka import KafkaConsumer, TopicPartition

        from infra.identity_commands import publish_command

        consumer = None
        if answer_topic is not None:  # positioned before sending, so the answer cannot be missed
            consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
            deadline = time.monotonic() + 10
            while not consumer.partitions_for_topic(answer_topic):  # None until the client's metadata has it
                if time.monotonic() > deadline:
                    raise click.ClickException(f"no topic {answer_topic} on the broker at {bootstrap}: is the hub "
                                               "set up (`omnihub run` or `omnihub topics create`)?")
                consumer.topics()  # fetches the cluster's metadata again
                time.sleep(0.2)
            partitions = [TopicPartition(answer_topic, p) for p in consumer.partitions_for_topic(answer_topic)]
            consumer.assign(partitions)
            consumer.seek_to_end()
            for partition in partitions:
                consumer.position(partition)
        publish_command(settings, bootstrap, command)
        if consumer is None:
            return None
        from schemas.serde import codec

        decode = codec("customer_erasure", settings.schemas.registry_url, answer_topic).decode
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        answer = decode(record.value)
                        if answer.get("request_id") == command["request_id"]:
                            return answer
        finally:
            consumer.close()
        raise click.ClickException(f"the worker did not answer within {timeout:.0f} s (is `omnihub run` up?); the "
                                   f"request stays on {settings.topics.identity_commands} and is carried out when it runs")
    except KafkaError as error:
        raise click.ClickException(f"the broker at {bootstrap} did not take the command ({error}); nothing was sent") from None


@identity.command("split")
@click.argument("customer_id")
@click.option("--identifier", "identifiers", multiple=True, required=True,
              help="kind:value to move to a new customer, as in identity-merges (repeatable), e.g. email:b@x.com")
@click.option("--reason", required=True, help="why: kept in identity-warnings")
@click.pass_context
def identity_split(ctx: click.Context, customer_id: str, identifiers: tuple[str, ...], reason: str) -> None:
    """Undo a wrong merge: move identifiers off CUSTOMER_ID to a new customer that will not be merged back."""
    from infra.identity_commands import split_command

    settings = _settings(ctx)
    try:  # as token keys: the command topic never carries the values
        command = split_command(settings, customer_id, list(identifiers), reason)
    except ValueError as error:
        raise click.UsageError(f"--identifier {error}") from None
    _send_identity_command(settings, command)
    click.echo(f"split sent to {settings.topics.identity_commands}; the result appears on {settings.topics.identity_merges}")


@cli.group()
def topics() -> None:
    """Kafka topics."""


@topics.command("create")
@click.pass_context
def topics_create(ctx: click.Context) -> None:
    """Create the configured topics and the bundled connectors' channel topics that do not exist yet."""
    from infra.hub import channel_topics
    from infra.kafka import ensure_topics

    settings = _settings(ctx)
    created = ensure_topics(_bootstrap(settings), settings.topics.all_names() + channel_topics(settings),
                            settings.topics.partitions, settings.topics.replication_factor,
                            (settings.topics.customer_profiles,))
    click.echo(f"created: {', '.join(created)}" if created else "all topics exist")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
