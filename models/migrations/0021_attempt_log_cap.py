from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

# The delivery log keeps the last tries of a delivery (models/webhook_deliveries.py, ATTEMPT_LOG_KEEP) and counts
# them all here; a delivery logged before counts the tries its log holds.
COUNT = [
    'UPDATE webhook_deliveries SET attempts_total ='
    ' (SELECT COUNT(*) FROM webhook_attempts a WHERE a.delivery_id = webhook_deliveries.id)',
]


class Migration(migrations.Migration):
    dependencies = [('models', '0020_live_credit_function')]

    initial = False

    operations = [
        ops.AddField(
            model_name='WebhookDelivery',
            name='attempts_total',
            field=fields.IntField(default=0, description='Tries in all, every series (the log keeps the last ones)'),
        ),
        ops.RunSQL(COUNT),
    ]
