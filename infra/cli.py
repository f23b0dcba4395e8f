"""The `omnihub` command."""
from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import click
from tabulate import tabulate

from infra.settings import Settings, SettingsError, load_settings

log = logging.getLogger("omnihub")

HUB_STATE_FILE = "hub.json"  # where a running hub says how to reach its broker and query endpoint


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


def _hub_state(settings: Settings) -> dict:
    path = Path(settings.data_dir) / HUB_STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


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
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "aiokafka", "clickhouse_connect"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
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
    from connectors.runtime import bundled_config, run_connector
    from infra.hub import Hub
    from sinks.named_queries import named_query, stored_counts

    async with Hub(settings) as hub:
        click.echo(f"broker {hub.bootstrap}; Faust worker pid {hub.worker.process.pid}; ClickHouse "
                   f"{settings.clickhouse.url or settings.clickhouse.embedded_path}")
        report = await run_connector(settings, hub.bootstrap, bundled_config("web_orders"))
        click.echo(report.describe())
        deadline = time.monotonic() + timeout
        while True:
            stored, dead = stored_counts(hub.client)
            if stored >= report.accepted and dead >= report.rejected:
                break
            if time.monotonic() > deadline:
                raise click.ClickException(f"timed out: ClickHouse has {stored}/{report.accepted} orders and "
                                           f"{dead}/{report.rejected} dead letters; see {hub.worker.log_file}")
            await asyncio.sleep(0.5)
        result = hub.client.query(named_query("orders"))
        click.echo(f"\nOrders in ClickHouse (timeline_events, {len(result.result_rows)} rows):")
        _print_table(list(result.column_names), result.result_rows)
        result = hub.client.query(named_query("dead_letters"))
        click.echo(f"\nDead letters in ClickHouse ({len(result.result_rows)} rows):")
        _print_table(list(result.column_names), result.result_rows)


@cli.command()
@click.option("--timeout", default=120.0, show_default=True, help="seconds to wait for the orders to reach ClickHouse")
@click.pass_context
def demo(ctx: click.Context, timeout: float) -> None:
    """Run the web-orders sample end to end on fresh embedded data and print what ClickHouse returns."""
    settings = _settings(ctx)
    demo_dir = Path(settings.data_dir) / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    updates = {"data_dir": demo_dir}
    if settings.embedded_clickhouse:
        updates["clickhouse"] = settings.clickhouse.model_copy(update={"embedded_path": demo_dir / "chdb", "query_port": 0})
    asyncio.run(_demo(settings.model_copy(update=updates), timeout))


@cli.command()
@click.option("--connector", "connectors", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="connector config to run once the hub is up (repeatable)")
@click.pass_context
def run(ctx: click.Context, connectors: tuple[str, ...]) -> None:
    """Run the hub until interrupted: broker (embedded unless configured), Faust worker, sink, query endpoint."""
    from connectors.runtime import run_connector
    from infra.hub import Hub

    settings = _settings(ctx)
    state_file = Path(settings.data_dir) / HUB_STATE_FILE

    async def main() -> None:
        async with Hub(settings) as hub:
            for signum in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().add_signal_handler(signum, hub.request_stop)
            state = {"bootstrap_servers": hub.bootstrap,
                     "query_url": hub.query_server.address if hub.query_server else None}
            state_file.parent.mkdir(parents=True, exist_ok=True)
            state_file.write_text(json.dumps(state))
            click.echo(f"hub running: {json.dumps(state)}; Ctrl-C stops it")
            try:
                for config in connectors:
                    click.echo((await run_connector(settings, hub.bootstrap, config)).describe())
                await hub.wait()
            finally:
                state_file.unlink(missing_ok=True)

    asyncio.run(main())
    click.echo("hub stopped")


@cli.group()
def connector() -> None:
    """Channel connectors (connectors/)."""


@connector.command("run")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--source", type=click.Path(exists=True, dir_okay=False), help="read this file instead of the config's")
@click.pass_context
def connector_run(ctx: click.Context, config: str, source: str | None) -> None:
    """Read a source once and publish it; prints read = accepted + rejected."""
    from connectors.runtime import run_connector

    settings = _settings(ctx)
    try:
        report = asyncio.run(run_connector(settings, _bootstrap(settings), config, Path(source) if source else None))
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(report.describe())


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


@cli.command()
@click.argument("sql")
@click.option("--param", "params", multiple=True, help="name=value for {name:Type} placeholders")
@click.pass_context
def query(ctx: click.Context, sql: str, params: tuple[str, ...]) -> None:
    """Run a read-only SQL query and print the result as a table."""
    settings = _settings(ctx)
    parameters = dict(p.split("=", 1) for p in params)
    query_url = _hub_state(settings).get("query_url") if settings.embedded_clickhouse else None
    if query_url:  # a running hub owns the embedded folder: ask it
        request = urllib.request.Request(query_url + "/query", data=json.dumps({"sql": sql, "parameters": parameters}).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise click.ClickException(json.loads(error.read()).get("error", str(error))) from None
        _print_table(answer["columns"], answer["rows"])
        return
    from infra.clickhouse import open_client

    try:
        result = open_client(settings, create_database=False).query(sql, parameters=parameters or None, settings={"readonly": 1})
    except Exception as error:
        raise click.ClickException(str(error)) from None
    _print_table(list(result.column_names), result.result_rows)


@cli.group()
def topics() -> None:
    """Kafka topics."""


@topics.command("create")
@click.pass_context
def topics_create(ctx: click.Context) -> None:
    """Create the configured topics that do not exist yet."""
    from infra.kafka import ensure_topics

    settings = _settings(ctx)
    created = ensure_topics(_bootstrap(settings), settings.topics.all_names(), settings.topics.partitions,
                            settings.topics.replication_factor)
    click.echo(f"created: {', '.join(created)}" if created else "all topics exist")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
