from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0015_events_webhooks')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='UsageEvent',
            index=Index(fields=['account_id', 'run_id', 'id']),
        ),
    ]
