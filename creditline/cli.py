"""The ``creditline`` command (README, Command line).

What only one command needs (the application and its schema, uvicorn, billing, the demo) is imported in that
command: ``creditline token create`` or ``user create`` took 1.1 s of imports before its first statement, of
which 0.75 s was the GraphQL application it never uses.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tortoise.exceptions import IntegrityError

from creditline import db
from creditline.clock import Clock
from creditline.db_backends import DatabaseBusy, is_connection_failure, is_sqlite_busy, unavailable
from creditline.settings import Settings
from models import ledger, portal
from models.ids import decode_id, encode_id
from models.tables import EXTERNAL_ID_MAX_LENGTH, ApiToken, CreditAccount, TokenKind, User
from models.tokens import SCOPES, UnknownScopeError, create_token, revoke_token
from resolvers import boundary

if TYPE_CHECKING:
    from creditline.serving import ServeConfig

DEMO_EMAIL = "demo@creditline.local"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="creditline", description="Creditline billing API")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the GraphQL API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        help="worker processes on the one port (PostgreSQL only; default 1)",
    )
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser(
        "sweep", help="record expiries, release timed-out holds, reconcile payments, charge auto top-ups due, once"
    )
    sub.add_parser("audit", help="check every account's ledger invariant; exit 1 on drift")
    sub.add_parser("demo", help="create a demo user and tokens on first run (used by make run)")
    user = sub.add_parser("user", help="manage users").add_subparsers(dest="user_command", required=True)
    create_user = user.add_parser("create", help="create a user")
    create_user.add_argument("email")
    create_user.add_argument("--external-id", help="your platform's own id for the user (unique, immutable)")
    token = sub.add_parser("token", help="manage tokens").add_subparsers(dest="token_command", required=True)
    create = token.add_parser("create", help="create a token; prints it alone on the last line")
    who = create.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="EMAIL")
    who.add_argument("--service", metavar="NAME")
    who.add_argument("--admin", action="store_true")
    create.add_argument(
        "--scope", action="append", default=[], help=f"service scope, repeatable: {', '.join(sorted(SCOPES))}"
    )
    create.add_argument("--name", help="a name for an admin token (default: admin)")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", metavar="DAYS", type=int, help="the token stops working after DAYS days")
    expiry.add_argument("--expires-at", metavar="WHEN", help="the token stops working then (ISO 8601 with a zone)")
    webhooks = sub.add_parser("webhooks", help="outbound webhooks").add_subparsers(
        dest="webhooks_command", required=True
    )
    webhooks.add_parser("deliver", help="fan events out and send the deliveries due, once")
    token.add_parser("list", help="list every token (never their secrets)")
    token.add_parser("revoke", help="revoke a token (by the id `token list` shows, or its global ID)").add_argument(
        "id"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    settings = Settings.from_env()
    if args.command == "serve":
        refusal = settings.refusal()
        if refusal:
            sys.exit(refusal)
        if args.workers > 1 and settings.is_sqlite:
            print(f"creditline: {SQLITE_WORKERS_REFUSAL}", file=sys.stderr)
            sys.exit(USAGE_STATUS)
    # Every command needs the database: say in one line what to fix rather than a traceback (and, for
    # serve, rather than a server that answers 500s). Only migrate runs on a database not migrated yet.
    try:
        asyncio.run(db.ensure_ready(settings, migrations=args.command != "migrate"))
    except db.DatabaseNotReady as exc:
        sys.exit(f"creditline: {exc}")
    if args.command == "serve":
        _serve(settings, args.host or settings.host, args.port or settings.port, args.workers)
        return
    commands: dict[str, Callable[[Settings, argparse.Namespace], Awaitable[int]]] = {
        "migrate": _migrate,
        "sweep": _sweep,
        "audit": _audit,
        "demo": _demo,
        "user": _user,
        "token": _token,
        "webhooks": _webhooks,
    }
    try:
        status = asyncio.run(_with_database(settings, args, commands[args.command]))
    except Exception as exc:
        if isinstance(exc, DatabaseBusy) or is_sqlite_busy(exc):  # e.g. a frozen server holds the write lock
            print(f"creditline: {_busy_message(settings)}", file=sys.stderr)
            sys.exit(BUSY_STATUS)
        if isinstance(exc, IntegrityError):  # a concurrent command wrote the same row between check and insert
            sys.exit(f"creditline: another command made the same change at the same moment ({exc}): run it again")
        if not is_connection_failure(exc):
            raise
        # it went away while the command ran
        sys.exit(f"creditline: {db.cannot_reach(settings.database_url, unavailable(exc))}")
    sys.exit(status)


BUSY_STATUS = 75
"""Exit status of a command that found the SQLite database's write lock held for longer than the busy
timeout (sysexits' EX_TEMPFAIL: try again later)."""


def _busy_message(settings: Settings) -> str:
    return (
        f"the SQLite database {db.sqlite_path(settings.database_url)} is busy: another process held its write"
        f" lock for more than {db.sqlite_busy_timeout_ms(settings)} ms (CREDITLINE_DB_STATEMENT_TIMEOUT_MS);"
        " try again"
    )


USAGE_STATUS = 2
"""Exit status of ``serve --workers N`` refused on SQLite (as argparse's for a bad argument)."""
SQLITE_WORKERS_REFUSAL = (
    "--workers needs PostgreSQL: a SQLite database has one writer, so one server process serves it"
    " (set CREDITLINE_DATABASE_URL=postgresql://... to run several workers)"
)
MAX_WORKERS = 64


def _worker_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"between 1 and {MAX_WORKERS}, not {count}")
    return count


def worker_app() -> Any:
    """The application of one worker of ``serve --workers N`` (uvicorn's factory, called in each worker
    process): built from the same environment as the supervisor's, with its own pool and bus subscription."""
    from creditline.app import create_app

    watch_supervisor(os.getppid())
    return create_app(Settings.from_env(), ws_message_limit=False)


SUPERVISOR_CHECK_SECONDS = 1.0
ORPHAN_EXIT_SECONDS = 60.0
"""How long an orphaned worker gets to shut down gracefully before it exits anyway."""


def watch_supervisor(supervisor: int) -> None:
    """End this worker once its supervisor is gone: a supervisor killed with SIGKILL (an OOM kill, ``kill -9``)
    cannot stop its workers, which would go on serving unsupervised and keep the port, so that the server
    started in its place could not bind it. A SIGTERM first (the graceful shutdown), then an exit."""

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(SUPERVISOR_CHECK_SECONDS)
        print(f"creditline: worker {os.getpid()}: the supervisor ({supervisor}) is gone, stopping", file=sys.stderr)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_EXIT_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def _serve(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from creditline.app import create_app
    from creditline.logs import log_config
    from creditline.serving import ServeConfig, connection_cap, guarded_protocol, raise_file_limit

    lock = db.SqliteServerLock(settings.database_url)  # one server per SQLite file, for its whole life
    try:
        lock.acquire()
    except db.SecondServerError as exc:
        sys.exit(f"creditline: {exc}")
    # Connections past the cap get 503 (uvicorn's limit_concurrency counts websockets too); the cap stays
    # below the file limit, raised to its hard limit first, so that accepting never fails for want of one.
    file_limit = raise_file_limit()
    cap = connection_cap(settings.max_connections, file_limit)
    if cap < settings.max_connections:
        print(
            f"creditline: CREDITLINE_MAX_CONNECTIONS={settings.max_connections} lowered to {cap}:"
            f" the open-file limit is {file_limit}",
            file=sys.stderr,
        )
    try:
        config = ServeConfig(
            # uvicorn enforces the websocket message size itself (ws_max_size): no check in the app. Several
            # workers are spawned processes: each imports and builds its own app (``worker_app``).
            create_app(settings, ws_message_limit=False) if workers == 1 else "creditline.cli:worker_app",
            factory=workers > 1,
            workers=workers,
            host=host,
            port=port,
            log_config=log_config(settings.log_format),
            log_level="info",
            access_log=False,  # ours (creditline/logs.py) when CREDITLINE_ACCESS_LOG=1
            proxy_headers=False,
            # Events are ~100-byte JSON frames: compression gains nothing and costs ~40 KB per websocket.
            ws_per_message_deflate=False,
            ws_max_size=settings.ws_max_message_bytes,
            http=guarded_protocol(),
            timeout_keep_alive=settings.keep_alive_seconds,
            timeout_worker_healthcheck=settings.worker_healthcheck_seconds,
            limit_concurrency=cap,
            h11_max_incomplete_event_size=settings.max_header_bytes,
            header_timeout_seconds=settings.header_timeout_seconds,
            max_header_bytes=settings.max_header_bytes,
        )
        if workers > 1:
            _supervise(config)
            return
        server = uvicorn.Server(config)
        server.run()
        if not server.started:
            sys.exit(STARTUP_FAILURE)  # the lifespan or the bind failed, and said why
    finally:
        lock.release()


def _supervise(config: ServeConfig) -> None:
    """uvicorn's supervisor: it binds the port once and hands the socket to ``config.workers`` spawned
    processes. SIGTERM or SIGINT stops them all (each finishes its requests and lifespan, as one server
    does); a worker that dies or stops answering the supervisor's health check is replaced; one that fails
    to start (the lifespan or the database) stops the whole server, which then exits 3."""
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors.multiprocess import Multiprocess

    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        sys.exit(STARTUP_FAILURE)


async def _with_database(
    settings: Settings,
    args: argparse.Namespace,
    command: Callable[[Settings, argparse.Namespace], Awaitable[int]],
) -> int:
    """Run a command beside any running server: on SQLite every transaction of the command holds the
    database's write lock for its own length only (``BEGIN IMMEDIATE``: creditline.db_backends), so it never
    interleaves with one of the server's; only ``migrate`` takes the server lock."""
    if args.command == "migrate":
        return await command(settings, args)
    await db.init_db(settings.database_url, settings)
    try:
        return await command(settings, args)
    finally:
        await db.close_db()


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Apply pending migrations holding the server lock (no server starts meanwhile). Beside a running SQLite
    server, which holds it, only an up-to-date database is accepted: the schema never changes under it."""
    lock = db.SqliteServerLock(settings.database_url)
    try:
        lock.acquire()
        beside_server = False
    except db.SecondServerError:
        beside_server = True
    try:
        await db.init_db(settings.database_url, settings)
        try:
            pending = await db.pending_migrations()
        finally:
            await db.close_db()
        if not pending:
            print("nothing to migrate: every migration is applied")
            return 0
        if beside_server:
            print(
                f"creditline: {len(pending)} migration(s) to apply ({', '.join(pending)}), but a Creditline server"
                " (or another `creditline migrate`) is running on the SQLite database"
                f" {db.sqlite_path(settings.database_url)}: stop it, migrate, then start it again",
                file=sys.stderr,
            )
            return 2
        await db.migrate(settings.database_url)
        await db.close_db()
        print("migrations applied")
        return 0
    finally:
        lock.release()


async def _sweep(settings: Settings, args: argparse.Namespace) -> int:
    from billing.reconcile import reconcile_pending, renew_subscriptions
    from creditline.app import build_services
    from creditline.auto_top_up_worker import run_due
    from creditline.jobs import prune_events, sweep_once

    services = build_services(settings, Clock())
    await services.bus.start()  # subscribers on the servers see what the sweep changes
    try:
        report = await sweep_once(services)
        reconciled = await reconcile_pending(services)
        renewed = await renew_subscriptions(services)
        topped_up = await run_due(services)
        await prune_events(services)
    finally:
        await services.bus.stop()
        await services.gateway.close()
    print(
        f"sweep: {report.expired_lots} lots expired, {report.released_holds} holds released,"
        f" {reconciled} pending payments reconciled, {renewed} subscription payments charged,"
        f" {topped_up} auto top-ups charged"
    )
    return 0


async def _webhooks(settings: Settings, args: argparse.Namespace) -> int:
    from creditline.app import build_services
    from creditline.webhooks.worker import deliver_once

    services = build_services(settings, Clock())
    try:
        attempts = await deliver_once(services)
    finally:
        await services.gateway.close()
    print(f"webhooks: {attempts} deliveries attempted")
    return 0


async def _audit(settings: Settings, args: argparse.Namespace) -> int:
    findings = await ledger.audit()
    count = await CreditAccount.all().count()
    for finding in findings:
        print(f"account {finding.account_id}: {finding.problem}")
    print(f"audit: {count} accounts checked, {len(findings)} problems")
    return 1 if findings else 0


async def _new_user(settings: Settings, email: str, external_id: str | None = None) -> int:
    return await ledger.create_user(
        email,
        signup_bonus=settings.signup_bonus,
        bonus_lifetime=timedelta(days=settings.signup_bonus_days),
        now=Clock().now(),
        external_id=external_id,
    )


async def _user(settings: Settings, args: argparse.Namespace) -> int:
    email = args.email.strip().lower()
    if "@" not in email:
        print(f"creditline: not an email address: {args.email!r}", file=sys.stderr)
        return 2
    external_id = args.external_id
    if external_id is not None:
        try:
            boundary.identifier(external_id, "--external-id", EXTERNAL_ID_MAX_LENGTH)
        except boundary.InputError as exc:
            print(f"creditline: {exc.message}", file=sys.stderr)
            return 2
    if await User.exists(email=email):
        print(f"creditline: a user with email {email} exists already", file=sys.stderr)
        return 1
    if external_id is not None and await User.exists(external_id=external_id):
        print(f"creditline: a user with external id {external_id!r} exists already", file=sys.stderr)
        return 1
    user_id = await _new_user(settings, email, external_id)
    print(f"user {email} created: {encode_id('User', user_id)}")
    return 0


TOKEN_NAME_MAX_LENGTH = 200
"""As createApiToken's ``name``."""


async def _token(settings: Settings, args: argparse.Namespace) -> int:
    if args.token_command == "list":
        return await _token_list()
    if args.token_command == "revoke":
        return await _token_revoke(args.id)
    now = Clock().now()
    expires_at = _expiry(args, now)
    if isinstance(expires_at, str):
        print(f"creditline: {expires_at}", file=sys.stderr)
        return 2
    if args.scope and not args.service:
        print("creditline: --scope is for service tokens only", file=sys.stderr)
        return 2
    kwargs: dict[str, Any] = {"expires_at": expires_at}
    if args.user:
        user = await User.filter(email=args.user.strip().lower()).first()
        if user is None:
            print(f"creditline: no user with email {args.user}", file=sys.stderr)
            return 1
        kwargs |= {"kind": TokenKind.USER, "name": user.email, "user_id": user.id}
    elif args.service:
        if not args.scope:
            print("creditline: a service token needs at least one --scope (e.g. usage:write)", file=sys.stderr)
            return 2
        if unknown := sorted(set(args.scope) - set(SCOPES)):
            print(f"creditline: {UnknownScopeError(unknown)}", file=sys.stderr)
            return 2
        kwargs |= {"kind": TokenKind.SERVICE, "name": args.service, "scopes": tuple(args.scope)}
    else:
        kwargs |= {"kind": TokenKind.ADMIN, "name": args.name or "admin"}
    if not args.user:
        option = "--service" if args.service else "--name"
        try:
            boundary.label(kwargs["name"], option, TOKEN_NAME_MAX_LENGTH)
        except boundary.InputError as exc:
            print(f"creditline: {exc.message}", file=sys.stderr)
            return 2
    kind = kwargs.pop("kind")
    secret = await create_token(kind, now=now, **kwargs)
    print(f"{kind.value.lower()} token for {kwargs['name']} (shown once; store it now):")
    print(secret)
    return 0


def _expiry(args: argparse.Namespace, now: datetime) -> datetime | str | None:
    """``--expires-in DAYS`` or ``--expires-at WHEN`` as an instant in the future, or what is wrong with it."""
    if args.expires_in is not None:
        if args.expires_in <= 0:
            return f"--expires-in must be a positive number of days, got {args.expires_in}"
        return now + timedelta(days=args.expires_in)
    if args.expires_at is None:
        return None
    try:
        when = datetime.fromisoformat(args.expires_at)
    except ValueError:
        return f"--expires-at must be a date and time like 2027-01-31T00:00:00Z, got {args.expires_at!r}"
    if when.tzinfo is None:
        return f"--expires-at needs a time zone, e.g. {args.expires_at}Z"
    if when <= now:
        return f"--expires-at must be in the future, got {args.expires_at}"
    return when.astimezone(UTC)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _token_list() -> int:
    header = ("id", "global id", "kind", "name", "scopes", "prefix", "created", "last used", "expires", "revoked")
    rows = [header]
    for token in await ApiToken.all().order_by("id"):
        rows.append(
            (
                str(token.id),
                encode_id("ApiToken", token.id),
                str(token.kind),
                token.name,
                ",".join(token.scopes.split()) or "-",
                token.prefix or "-",
                _when(token.created_at),
                _when(token.last_used_at),
                _when(token.expires_at),
                _when(token.revoked_at),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


async def _token_revoke(given: str) -> int:
    pk = int(given) if given.isascii() and given.isdigit() and len(given) <= 18 else decode_id(given, "ApiToken")
    token = None if pk is None else await ApiToken.filter(id=pk).first()
    if token is None:
        print(f"creditline: no token with id {given}", file=sys.stderr)
        return 1
    if token.revoked_at is None and await revoke_token(token.id, Clock().now()):
        print(f"token {token.id} ({token.kind} {token.name}) revoked")
    else:
        print(f"token {token.id} ({token.kind} {token.name}) was revoked already")
    return 0


async def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from creditline import demo

    existing = await User.filter(email=DEMO_EMAIL).first()
    now = Clock().now()
    if existing is not None:
        print(f"demo data exists already (user {DEMO_EMAIL}); tokens were shown on the first run.")
        print("Make new ones with: .venv/bin/creditline token create --user " + DEMO_EMAIL)
        user_id = int(existing.id)
    else:
        user_id = await ledger.create_user(
            DEMO_EMAIL,
            signup_bonus=settings.signup_bonus,
            bonus_lifetime=timedelta(days=settings.signup_bonus_days),
            now=demo.start(now),  # signed up before the usage demo.make writes
        )
        made = await demo.make(settings, user_id, (await CreditAccount.get(user_id=user_id)).id, now)
        user_token = await create_token(TokenKind.USER, name=DEMO_EMAIL, user_id=user_id, now=now)
        agent_token = await create_token(TokenKind.SERVICE, name="demo-agent", scopes=("usage:write",), now=now)
        admin_token = await create_token(TokenKind.ADMIN, name="demo-admin", now=now)
        print(
            "\nDemo data created (tokens are shown only this once):\n"
            f"  user      {DEMO_EMAIL}  id {encode_id('User', user_id)}\n"
            f"  user token     {user_token}\n"
            f"  agent token    {agent_token}   (service 'demo-agent', scope usage:write)\n"
            f"  admin token    {admin_token}\n"
            f"  usage          {made.spends} spends over {demo.DAYS} days by {', '.join(demo.AGENTS)}"
            " (answer, web_search, transcription)\n"
            f"  payments       {made.payments}\n"
            f"  expiring       {demo.EXPIRING_CREDITS} Free credits expire in 3 days\n"
        )
    # A new sign-in link on every run: its code works once, for CREDITLINE_PORTAL_CODE_SECONDS.
    account = await CreditAccount.get(user_id=user_id)
    lifetime = timedelta(seconds=settings.portal_code_seconds)
    code, _ = await portal.mint_code(account.id, created_by="cli:demo", now=now, lifetime=lifetime)
    minutes = max(1, settings.portal_code_seconds // 60)
    print(f"My Credit of {DEMO_EMAIL} (sign-in link, works once, for {minutes} min):")
    print(f"  {portal.portal_link(settings.public_url, code)}")
    if not (Path(settings.web_dist) / "index.html").is_file():
        print("The page is not built yet: `make web` builds it (Node.js 20 or newer); `make run` does when it can.")
    return 0
