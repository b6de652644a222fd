from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0018_limit_reached_period')]

    initial = False

    operations = [
        ops.AddField(
            model_name='WebhookDelivery',
            name='leased_until',
            field=fields.DatetimeField(null=True, description='While an attempt is under way: when its claim runs out (NULL once recorded)', auto_now=False, auto_now_add=False),
        ),
        ops.AddIndex(
            model_name='WebhookDelivery',
            index=Index(fields=['event_id', 'status']),
        ),
    ]
