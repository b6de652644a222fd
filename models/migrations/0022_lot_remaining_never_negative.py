from tortoise import migrations
from tortoise.migrations import operations as ops

# A lot's remaining credit never goes below zero. The ledger's arithmetic keeps it so (the spend's lots are read
# under the account's lock); this makes the database refuse a write that would break it, whatever wrote it, so a
# wrong read fails its transaction loudly instead of leaving a drift for the audit to find.
POSTGRES = "ALTER TABLE credit_lots ADD CONSTRAINT credit_lots_remaining_never_negative CHECK (remaining >= 0)"
POSTGRES_UNDO = "ALTER TABLE credit_lots DROP CONSTRAINT IF EXISTS credit_lots_remaining_never_negative"
# SQLite adds no CHECK to an existing table: triggers refuse the same rows.
SQLITE = (
    "CREATE TRIGGER credit_lots_remaining_never_negative_insert BEFORE INSERT ON credit_lots"
    " WHEN NEW.remaining < 0 BEGIN SELECT RAISE(ABORT, 'credit_lots.remaining must not be negative'); END",
    "CREATE TRIGGER credit_lots_remaining_never_negative_update BEFORE UPDATE OF remaining ON credit_lots"
    " WHEN NEW.remaining < 0 BEGIN SELECT RAISE(ABORT, 'credit_lots.remaining must not be negative'); END",
)
SQLITE_UNDO = (
    "DROP TRIGGER IF EXISTS credit_lots_remaining_never_negative_insert",
    "DROP TRIGGER IF EXISTS credit_lots_remaining_never_negative_update",
)


async def create(apps, schema_editor) -> None:
    if schema_editor.client.capabilities.dialect == "postgres":
        await schema_editor._run_sql(POSTGRES)
    else:
        for sql in SQLITE:  # the schema editor splits its SQL at every ';', a trigger's body too
            await schema_editor.client.execute_query(sql)


async def drop(apps, schema_editor) -> None:
    if schema_editor.client.capabilities.dialect == "postgres":
        await schema_editor._run_sql(POSTGRES_UNDO)
    else:
        for sql in SQLITE_UNDO:
            await schema_editor.client.execute_query(sql)


class Migration(migrations.Migration):
    dependencies = [('models', '0021_attempt_log_cap')]

    initial = False

    operations = [
        ops.RunPython(create, drop),
    ]
