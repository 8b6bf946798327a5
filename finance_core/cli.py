"""`python -m finance_core`: the operator's commands (SPEC section 2)."""

import argparse
import getpass
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine

from finance_core import demo
from finance_core.access import audit, tokens, users
from finance_core.access.roles import ADMIN, FINANCE
from finance_core.feed.events import Outcome
from finance_core.feed.replay import replay_events
from finance_core.feed.retention import prune_events
from finance_core.feed.stripe_api import StripeUnavailable, make_client
from finance_core.feed.sync import SyncError, run_sync
from finance_core.settings import SettingsError, get_settings
from finance_core.store import migrate
from finance_core.store.db import make_engine, read_transaction

Command = Callable[[argparse.Namespace, Engine], int]
ROLE_HELP = f"{FINANCE} or {ADMIN}; repeatable"


def _now() -> datetime:
    return datetime.now(UTC)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


def cmd_init_db(args: argparse.Namespace, engine: Engine) -> int:
    print(f"database schema is current ({engine.url.render_as_string(hide_password=True)})")
    return 0


def _since(value: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time such as 2026-11-25 or 2026-11-25T08:00:00Z"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def cmd_token_create(args: argparse.Namespace, engine: Engine) -> int:
    token = tokens.create_token(
        engine=engine, name=args.name, roles=args.role, actor=audit.cli_actor(), now=_now()
    )
    print(f"created token {args.name!r} with roles {', '.join(sorted(set(args.role)))}.")
    print("Store it now: it is shown only this once.")
    print(token)
    return 0


def cmd_token_list(args: argparse.Namespace, engine: Engine) -> int:
    with read_transaction(engine) as conn:
        rows = tokens.list_tokens(conn=conn)
    print(f"{'NAME':24} {'ROLES':20} {'CREATED':21} {'LAST USED':21} REVOKED")
    for info in rows:
        print(
            f"{info.name:24} {','.join(info.roles):20} {_when(info.created_at):21} "
            f"{_when(info.last_used_at):21} {_when(info.revoked_at)}"
        )
    return 0


def cmd_token_revoke(args: argparse.Namespace, engine: Engine) -> int:
    tokens.revoke_token(engine=engine, name=args.name, actor=audit.cli_actor(), now=_now())
    print(f"revoked token {args.name!r}")
    return 0


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise users.UserError("the two passwords differ")
    return first


def cmd_user_add(args: argparse.Namespace, engine: Engine) -> int:
    users.add_user(
        engine=engine,
        username=args.username,
        password=_read_password(),
        roles=args.role,
        name=args.name,
        email=args.email,
        actor=audit.cli_actor(),
        now=_now(),
    )
    roles = ", ".join(sorted(set(args.role)))
    print(f"added user {args.username.strip().lower()!r} with roles {roles}")
    return 0


def cmd_user_list(args: argparse.Namespace, engine: Engine) -> int:
    with read_transaction(engine) as conn:
        rows = users.list_users(conn=conn)
    print(f"{'USERNAME':20} {'NAME':24} {'ROLES':20} CREATED")
    for user in rows:
        print(
            f"{user.username:20} {user.name:24} {','.join(user.roles):20} {_when(user.created_at)}"
        )
    return 0


def cmd_user_remove(args: argparse.Namespace, engine: Engine) -> int:
    users.remove_user(engine=engine, username=args.username, actor=audit.cli_actor(), now=_now())
    print(f"removed user {args.username!r}; their sessions have ended")
    return 0


def _existing(engine: Engine, username: str) -> str:
    """The username, checked before asking for anything else."""
    with read_transaction(engine) as conn:
        if not users.user_exists(conn=conn, username=username):
            raise users.UserError(f"no user named {username!r}")
    return users.normalize_username(username)


def cmd_user_set_password(args: argparse.Namespace, engine: Engine) -> int:
    username = _existing(engine, args.username)
    users.set_password(
        engine=engine,
        username=username,
        password=_read_password(),
        actor=audit.cli_actor(),
        now=_now(),
    )
    print(f"set a new password for {username!r}; their sessions have ended")
    return 0


def cmd_user_set_roles(args: argparse.Namespace, engine: Engine) -> int:
    username = _existing(engine, args.username)
    users.set_roles(
        engine=engine, username=username, roles=args.role, actor=audit.cli_actor(), now=_now()
    )
    roles = ", ".join(sorted({role.strip().lower() for role in args.role}))
    print(f"{username!r} now has the roles {roles}; their sessions have ended")
    return 0


def cmd_audit_list(args: argparse.Namespace, engine: Engine) -> int:
    filters = audit.AuditFilter(actor=args.actor, action=args.action, start=args.since)
    print(f"{'TIME':21} {'ACTOR':24} {'ACTION':18} {'TARGET':24} DETAIL")
    for entry in audit.entries(engine=engine, filters=filters):
        print(
            f"{_when(entry.recorded_at):21} {entry.actor:24} {entry.action:18} "
            f"{entry.target:24} {entry.detail}"
        )
    return 0


def cmd_sync(args: argparse.Namespace, engine: Engine) -> int:
    settings = get_settings()
    client = make_client(settings)
    print(f"sync from {settings.stripe_api_base}, started {_when(_now())}", flush=True)
    started = _now()
    report = run_sync(
        engine=engine,
        client=client,
        actor=audit.cli_actor(),
        progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True),
    )
    for line in report.lines():
        print(line)
    seconds = (_now() - started).total_seconds()
    print(f"done in {seconds:.1f} s: {report.changed} changes, {report.failed} failures")
    return 1 if report.failed else 0


def cmd_replay(args: argparse.Namespace, engine: Engine) -> int:
    settings = get_settings()
    client = make_client(settings) if settings.stripe_api_key is not None else None
    outcomes = replay_events(
        engine=engine,
        event_ids=args.event_ids or None,
        actor=audit.cli_actor(),
        now=_now(),
        client=client,
    )
    if not outcomes:
        print("no failed events to replay")
    for outcome in outcomes:
        print(f"{outcome.event_id}: {outcome.message}")
    failures = sum(not outcome.ok for outcome in outcomes)
    if outcomes:
        print(f"replayed {len(outcomes) - failures} of {len(outcomes)}")
    return 1 if failures else 0


def cmd_demo(args: argparse.Namespace, engine: Engine) -> int:
    outcomes = demo.fill_store(engine=engine, now=_now, subscriptions=args.subscriptions)
    total = sum(outcomes.values())
    print(
        f"ingested {total} demo events: {outcomes[Outcome.PROCESSED]} applied, "
        f"{outcomes[Outcome.DUPLICATE]} duplicates, {outcomes[Outcome.IGNORED]} ignored, "
        f"{outcomes[Outcome.FAILED]} failed"
    )
    print("add a login with: python -m finance_core user add NAME --role finance")
    return 1 if outcomes[Outcome.FAILED] else 0


def cmd_prune(args: argparse.Namespace, engine: Engine) -> int:
    days = get_settings().event_retention_days
    report = prune_events(engine=engine, retention_days=days, now=_now(), dry_run=args.dry_run)
    print(f"{report.line()} (EVENT_RETENTION_DAYS={days})")
    print("failed events stay until they are replayed or dismissed")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m finance_core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("init-db", help="create or migrate the schema").set_defaults(
        run=cmd_init_db
    )

    token = commands.add_parser("token", help="Finance API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_commands.add_parser("create", help="create a token and print it once")
    create.add_argument("name")
    create.add_argument("--role", action="append", required=True, help=ROLE_HELP)
    create.set_defaults(run=cmd_token_create)
    token_commands.add_parser("list", help="list tokens").set_defaults(run=cmd_token_list)
    revoke = token_commands.add_parser("revoke", help="revoke a token")
    revoke.add_argument("name")
    revoke.set_defaults(run=cmd_token_revoke)

    user = commands.add_parser("user", help="dashboard users")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_commands.add_parser("add", help="add a user; password from stdin or a prompt")
    add.add_argument("username")
    add.add_argument("--role", action="append", required=True, help=ROLE_HELP)
    add.add_argument("--name")
    add.add_argument("--email")
    add.set_defaults(run=cmd_user_add)
    user_commands.add_parser("list", help="list users").set_defaults(run=cmd_user_list)
    remove = user_commands.add_parser("remove", help="remove a user (ends their sessions)")
    remove.add_argument("username")
    remove.set_defaults(run=cmd_user_remove)
    set_password = user_commands.add_parser(
        "set-password", help="a new password, from stdin or a prompt (ends their sessions)"
    )
    set_password.add_argument("username")
    set_password.set_defaults(run=cmd_user_set_password)
    set_roles = user_commands.add_parser(
        "set-roles", help="replace a user's roles (ends their sessions)"
    )
    set_roles.add_argument("username")
    set_roles.add_argument("--role", action="append", required=True, help=ROLE_HELP)
    set_roles.set_defaults(run=cmd_user_set_roles)

    audit_command = commands.add_parser("audit", help="the audit log")
    audit_commands = audit_command.add_subparsers(
        dest="audit_command", required=True, metavar="ACTION"
    )
    audit_list = audit_commands.add_parser("list", help="audit entries, newest first")
    audit_list.add_argument("--since", type=_since, metavar="ISO", help="e.g. 2026-11-25T08:00Z")
    audit_list.add_argument("--actor", help="exactly, e.g. ada or cli:root")
    audit_list.add_argument("--action", choices=audit.ACTIONS, metavar="ACTION")
    audit_list.set_defaults(run=cmd_audit_list)

    commands.add_parser(
        "sync", help="backfill and reconcile from Stripe's API (needs STRIPE_API_KEY)"
    ).set_defaults(run=cmd_sync)
    replay = commands.add_parser("replay", help="reprocess failed events (all when none named)")
    replay.add_argument("event_ids", nargs="*", metavar="EVENT_ID")
    replay.set_defaults(run=cmd_replay)
    prune = commands.add_parser(
        "prune", help="delete settled events older than EVENT_RETENTION_DAYS now"
    )
    prune.add_argument("--dry-run", action="store_true", help="count them, delete nothing")
    prune.set_defaults(run=cmd_prune)
    demo_command = commands.add_parser(
        "demo", help="fill the store with demo data through the real ingest path"
    )
    demo_command.add_argument("--subscriptions", type=int, default=300)
    demo_command.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        engine = make_engine(settings.database_url)
        migrate.upgrade(engine)
        return int(args.run(args, engine))
    except (
        SettingsError,
        tokens.TokenError,
        users.UserError,
        SyncError,
        StripeUnavailable,
        demo.NotADemoStore,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: what was done so far is kept; run it again to go on", file=sys.stderr)
        return 130
