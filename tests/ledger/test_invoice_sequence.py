"""Invoice numbers: gap-free and unique, even when the first payments of a fresh database complete at once.

The first number used to be taken by an UPDATE of the sequence row and, when the row was missing, an INSERT:
two first completions both inserted, one hit the unique key and rolled back after its card was charged."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from tortoise import connections

from models.tables import CreditLot, Invoice, InvoiceSequence, Transaction
from tests.support.backends import POSTGRES_URL, skip_or_fail
from tests.support.helpers import Api
from tests.support.payments import TOP_UP, top_up

FIRST = 12
SEED: list[str] = importlib.import_module("models.migrations.0010_invoice_sequence_seed").SEED


async def test_concurrent_first_top_ups_all_succeed_with_invoices_numbered_without_gaps(api: Api) -> None:
    assert await InvoiceSequence.all().count() == 0  # no number taken yet: the row is missing, as on 0004..0009
    users = [(await api.user(f"user{n}@example.com", bonus=0))[1] for n in range(FIRST)]

    answers = await asyncio.gather(
        *(api.data(TOP_UP, top_up("10", f"first-{n}", paymentToken="tok_visa"), user) for n, user in enumerate(users))
    )

    assert [a["topUp"]["__typename"] for a in answers] == ["TopUpSuccess"] * FIRST
    assert {a["topUp"]["transaction"]["status"] for a in answers} == {"SUCCEEDED"}
    numbers = sorted(a["topUp"]["transaction"]["invoice"]["number"] for a in answers)
    assert numbers == [f"INV-{n:06d}" for n in range(1, FIRST + 1)]
    assert sorted(i.number for i in await Invoice.all()) == list(range(1, FIRST + 1))
    assert [(s.id, s.last_number) for s in await InvoiceSequence.all()] == [(1, FIRST)]
    assert await CreditLot.filter(kind="PAID").count() == FIRST
    assert await Transaction.filter(status="SUCCEEDED").count() == FIRST

    # The next ones continue the sequence, concurrently too.
    more = await asyncio.gather(
        *(api.data(TOP_UP, top_up("10", f"next-{n}", paymentToken="tok_visa"), user) for n, user in enumerate(users))
    )
    assert sorted(a["topUp"]["transaction"]["invoice"]["number"] for a in more) == [
        f"INV-{n:06d}" for n in range(FIRST + 1, 2 * FIRST + 1)
    ]


async def test_a_declined_payment_takes_no_number(api: Api) -> None:
    _, user = await api.user("ada@example.com", bonus=0)

    declined = await api.data(TOP_UP, top_up("10", "no", paymentToken="tok_chargeDeclined"), user)
    paid = await api.data(TOP_UP, top_up("10", "yes", paymentToken="tok_visa"), user)

    assert declined["topUp"]["__typename"] == "PaymentDeclined"
    assert paid["topUp"]["transaction"]["invoice"]["number"] == "INV-000001"


async def test_the_seed_of_migration_0010_keeps_a_sequence_in_use(api: Api) -> None:
    conn = connections.get("default")
    await conn.execute_script(";".join(SEED))
    assert [(s.id, s.last_number) for s in await InvoiceSequence.all()] == [(1, 0)]
    await InvoiceSequence.filter(id=1).update(last_number=41)
    await conn.execute_script(";".join(SEED))
    assert [(s.id, s.last_number) for s in await InvoiceSequence.all()] == [(1, 41)]
    # A sequence row lost while invoices exist: numbering resumes after the last invoice.
    _, user = await api.user("ada@example.com", bonus=0)
    await api.data(TOP_UP, top_up("10", "one", paymentToken="tok_visa"), user)
    await InvoiceSequence.all().delete()
    await conn.execute_script(";".join(SEED))
    assert [(s.id, s.last_number) for s in await InvoiceSequence.all()] == [(1, 42)]


# The migration runs in a child process on a database of its own, so the session's connection is left alone.
SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from tortoise import Tortoise, connections
    from tortoise.migrations.api.migrate import migrate
    from creditline.db import tortoise_config
    from models.sql import Sql

    async def main():
        await migrate(config=tortoise_config(sys.argv[1]))
        rows = await Sql(connections.get("default")).fetch("SELECT id, last_number FROM invoice_sequence")
        await Tortoise.close_connections()
        print(json.dumps([[int(r["id"]), int(r["last_number"])] for r in rows]))

    asyncio.run(main())
    """
)


def sequence_after_migrating(url: str) -> list[list[int]]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, url], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    rows: list[list[int]] = json.loads(done.stdout)
    return rows


def test_a_fresh_sqlite_database_has_its_sequence_row(tmp_path: Path) -> None:
    assert sequence_after_migrating(f"sqlite://{tmp_path}/fresh.sqlite3") == [[1, 0]]


async def test_a_fresh_postgres_database_has_its_sequence_row() -> None:
    if not POSTGRES_URL:
        skip_or_fail("PostgreSQL half skipped: set CREDITLINE_TEST_POSTGRES_URL to run it")
    name = f"creditline_sequence_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            assert sequence_after_migrating(urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{name}"))) == [[1, 0]]
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
