from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0016_usage_by_run')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='UsageRollup',
            index=Index(fields=['dimension', 'bucket', 'account_id']),
        ),
    ]
