from tortoise import migrations
from tortoise.migrations import operations as ops

# The sequence's one row exists from the start, so taking a number is always an update of it (a missing
# row made the first concurrent payments race to insert it). A database that issued invoices keeps its row.
SEED = [
    'INSERT INTO invoice_sequence (id, last_number)'
    ' SELECT 1, (SELECT COALESCE(MAX(number), 0) FROM invoices)'
    ' WHERE NOT EXISTS (SELECT 1 FROM invoice_sequence WHERE id = 1)',
]


class Migration(migrations.Migration):
    dependencies = [('models', '0009_holds_by_account')]

    initial = False

    operations = [
        ops.RunSQL(SEED),
    ]
