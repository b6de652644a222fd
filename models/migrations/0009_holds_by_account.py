from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0008_usage_rollups_by_dimension')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='Hold',
            index=Index(fields=['account_id', 'status']),
        ),
    ]
