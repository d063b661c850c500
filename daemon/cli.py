"""The ``infersight`` command line. The only code that exits the process.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad configuration.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import sys

from infersight.daemon.config.listen import validate_runtime
from infersight.daemon.config.load import Config, ConfigError, load_config, with_overrides
from infersight.daemon.logfmt import setup_logging

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="infersight", description="Continuous profiler for GPU inference hosts.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent (collectors, storage, analysis, web UI)")
    _common(run)
    run.add_argument("--db", help="DuckDB file (overrides storage.path)")
    run.add_argument("--listen", help="HOST:PORT of the UI and API (overrides web.listen)")
    run.add_argument("--pid", type=int, action="append", default=[], help="also profile this process (repeatable)")
    run.add_argument("--scrape", action="append", default=[], metavar="URL",
                     help="also scrape this engine /metrics URL (repeatable)")

    check = sub.add_parser("check", help="check every capability the agent needs; exit 0 when it can run")
    _common(check)

    replay = sub.add_parser("replay", help="analyse a recording directory (layout: tests/fixtures/h100-scenario, its README)")
    replay.add_argument("dir", help="recording directory")
    replay.add_argument("--db", default=":memory:", help="DuckDB file to keep the result in (default: in memory)")
    replay.add_argument("--json", action="store_true", help="print window and event JSON lines")
    replay.add_argument("--config", help="config file (analysis thresholds)")

    serve = sub.add_parser("serve", help="the UI and API over a stored database, read-only (no collectors)")
    _common(serve)
    serve.add_argument("--db", required=True, help="DuckDB file, e.g. from `infersight replay DIR --db FILE`")
    serve.add_argument("--listen", help="HOST:PORT (overrides web.listen)")

    demo = sub.add_parser("demo", help="the agent plus a simulated inference engine, on a temporary DB")
    demo.add_argument("--listen", default="127.0.0.1:8321", help="HOST:PORT of the UI (default %(default)s)")
    demo.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)")

    export = sub.add_parser("export", help="write stored hours of every table as Parquet (table=/host=/date=/hour=)")
    _common(export)
    export.add_argument("--from", dest="t_from", required=True, metavar="TIME",
                        help="start: Unix seconds or ISO 8601 (UTC without a zone); rounded down to the hour")
    export.add_argument("--to", dest="t_to", required=True, metavar="TIME", help="end; rounded up to the hour")
    export.add_argument("--out", required=True, metavar="DIR", help="root folder of the Parquet tree")
    export.add_argument("--db", help="DuckDB file (default: storage.path); not one a running agent holds")
    export.add_argument("--host", help="host partition value (default: agent.host or the system host name)")

    install = sub.add_parser("install-service", help="install the systemd unit, sysusers/tmpfiles entries and "
                                                     "/etc/infersight/infersight.toml")
    install.add_argument("--root", default="/", metavar="DIR", help="install under this folder (default: /)")
    install.add_argument("--exe", help="the infersight program ExecStart runs (default: this installation's)")
    install.add_argument("--source", metavar="DIR", help="folder with the unit files (default: systemd/ of this "
                                                         "source tree)")
    install.add_argument("--dry-run", action="store_true", help="print what would be written; change nothing")
    return ap


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (see config.example.toml)")


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file plus command-line overrides, validated (raises ConfigError)."""
    config = load_config(args.config)
    changes = {}
    if getattr(args, "db", None):
        changes["storage.path"] = args.db
    if getattr(args, "listen", None):
        changes["web.listen"] = args.listen
    if getattr(args, "pid", None):
        changes["targets.pids"] = tuple(config.targets.pids) + tuple(args.pid)
    if getattr(args, "scrape", None):
        changes["collectors.engines.endpoints"] = tuple(config.collectors.engines.endpoints) + tuple(args.scrape)
    config = with_overrides(config, **changes)
    validate_runtime(config)
    return config


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            config = config_from_args(args)
            setup_logging(config.agent.log_level)
            return _run(config)
        if args.command == "check":
            from infersight.daemon.check import run_checks

            config = config_from_args(args)
            return run_checks(config)
        if args.command == "replay":
            from infersight.daemon.replay.command import main as replay_main

            config = load_config(args.config)
            setup_logging("warning")
            return replay_main(args.dir, db=args.db, as_json=args.json, config=config)
        if args.command == "serve":
            from infersight.daemon.serve import serve

            config = config_from_args(args)
            return asyncio.run(serve(config, args.db))
        if args.command == "demo":
            from infersight.daemon.demo.command import main as demo_main

            busy = _busy_port(args.listen)
            if busy:
                # before the engine starts: it takes seconds to come up
                print(f"infersight demo: {busy}; pick another: --listen 127.0.0.1:PORT (make demo PORT=...)",
                      file=sys.stderr)
                return EXIT_FAIL
            setup_logging("info")
            return demo_main(listen=args.listen, duration=args.duration)
        if args.command == "export":
            from infersight.daemon.exporters.parquet import main as export_main

            return export_main(args)
        if args.command == "install-service":
            from infersight.daemon.install import main as install_main

            return install_main(args)
    except ConfigError as exc:
        print(f"infersight: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # the reader went away (`infersight replay DIR --json | head`): stop quietly, as cat does
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return EXIT_USAGE


def _run(config: Config) -> int:
    import logging

    from infersight.daemon.runtime import Daemon
    from infersight.storage.store import StoreError

    if config.web.allow_unauthenticated and not config.web.auth_token:
        logging.getLogger("infersight").warning(
            "event=unauthenticated_listen listen=%s note=\"anyone who reaches this address can read profiles\"",
            config.web.listen)
    try:
        return asyncio.run(Daemon(config).run())
    except StoreError as exc:
        print(f"infersight: storage error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as exc:
        hint = " (pick another with --listen HOST:PORT or web.listen)" if exc.errno == errno.EADDRINUSE else ""
        print(f"infersight: cannot start: {exc}{hint}", file=sys.stderr)
        return EXIT_FAIL


def _busy_port(listen: str) -> str:
    """Why ``listen`` cannot be bound now ('' when it can, or when it is not HOST:PORT: the
    config check says so)."""
    from infersight.daemon.check import check_port

    try:
        result = check_port(listen)
    except ValueError:
        return ""
    return "" if result.status == "ok" else result.detail


if __name__ == "__main__":
    sys.exit(main())
