from tortoise import migrations
from tortoise.migrations import operations as ops

# PostgreSQL only: the live lots and active holds of an account, as the lock's statement reads them
# (models/ledger/locking.py). A VOLATILE function's queries take a snapshot of their own when it runs, so in a
# statement that waited for the account's row lock, the call made again for the row its holder left sees
# that holder's commit; the same read as a subquery would see the table as it was when the statement began.
# (SQLite has one writer: its lock statement reads the same with subqueries.)
LIVE_CREDIT = """
CREATE OR REPLACE FUNCTION creditline_live_credit(p_account bigint, p_held bigint) RETURNS json
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    RETURN json_build_array(
        (SELECT json_agg(json_build_object('id', l.id, 'kind', l.kind, 'remaining', l.remaining,
                'expires_at', l.expires_at, 'granted_at', l.granted_at))
            FROM credit_lots l WHERE l.account_id = p_account AND l.status = 'ACTIVE' AND l.remaining > 0),
        CASE WHEN p_held <> 0 THEN
            (SELECT json_agg(json_build_object('amount', h.amount, 'expires_at', h.expires_at))
                FROM holds h WHERE h.account_id = p_account AND h.status = 'ACTIVE')
        END);
END
$$
"""
DROP_LIVE_CREDIT = "DROP FUNCTION IF EXISTS creditline_live_credit(bigint, bigint)"


async def _on_postgres(sql: str, schema_editor) -> None:
    if schema_editor.client.capabilities.dialect == "postgres":
        await schema_editor._run_sql(sql)


async def create(apps, schema_editor) -> None:
    await _on_postgres(LIVE_CREDIT, schema_editor)


async def drop(apps, schema_editor) -> None:
    await _on_postgres(DROP_LIVE_CREDIT, schema_editor)


class Migration(migrations.Migration):
    dependencies = [('models', '0019_deliveries_leases')]

    initial = False

    operations = [
        ops.RunPython(create, drop),
    ]
