from tortoise import migrations
from tortoise.migrations import operations as ops
from models.tables import AlertStatus, WebhookDeliveryStatus, WebhookEndpointStatus
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0014_budgets_as_limits')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Alert',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account', fields.ForeignKeyField('models.CreditAccount', source_field='account_id', db_constraint=True, to_field='id', related_name='alerts', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharField(description='The type of the event that raised it', max_length=64)),
                ('level', fields.BigIntField(null=True, description='The threshold crossed, in micro-credits')),
                ('status', fields.CharEnumField(default=AlertStatus.OPEN, description='OPEN: OPEN\nRESOLVED: RESOLVED', enum_type=AlertStatus, max_length=8)),
                ('raised_event_id', fields.BigIntField(null=True)),
                ('resolved_event_id', fields.BigIntField(null=True)),
                ('opened_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('resolved_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'alerts', 'app': 'models', 'indexes': [Index(fields=['account_id', 'status', 'kind'])], 'pk_attr': 'id', 'table_description': 'A condition of an account that a person should know of (low balance, depleted, runs out soon), open'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='OutboxEvent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('public_id', fields.CharField(unique=True, max_length=40)),
                ('type', fields.CharField(max_length=64)),
                ('account_id', fields.BigIntField(null=True, description='The account it is about (none: the deployment)')),
                ('organization_id', fields.BigIntField(null=True, description="The organization of a pool's event")),
                ('sequence', fields.BigIntField(null=True, description="The account's count of events, from 1")),
                ('data', fields.TextField(description='The payload, JSON', unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('dispatched_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'events', 'app': 'models', 'unique_together': (('account_id', 'sequence'),), 'indexes': [Index(fields=['dispatched_at', 'id']), Index(fields=['created_at']), Index(fields=['account_id', 'type', 'id'])], 'pk_attr': 'id', 'table_description': 'An event for the platform (``models/outbox.py``), written in the transaction of the change it reports.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='WebhookEndpoint',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('url', fields.CharField(max_length=2000)),
                ('description', fields.CharField(null=True, max_length=500)),
                ('event_types', fields.CharField(default='', description='Space-separated, empty: every type', max_length=2000)),
                ('organization_id', fields.BigIntField(null=True, description="Only this organization's events (none: all)")),
                ('secret', fields.CharField(description='whsec_..., signs deliveries', max_length=200)),
                ('previous_secret', fields.CharField(null=True, description='Also signs, until it expires', max_length=200)),
                ('previous_secret_expires_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('status', fields.CharEnumField(default=WebhookEndpointStatus.ENABLED, description='ENABLED: ENABLED\nDISABLED: DISABLED', enum_type=WebhookEndpointStatus, max_length=8)),
                ('disabled_reason', fields.CharField(null=True, max_length=500)),
                ('disabled_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('failing_since', fields.DatetimeField(null=True, description='First failure since the last success', auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'webhook_endpoints', 'app': 'models', 'pk_attr': 'id', 'table_description': "A URL of the platform's that is sent the events it asks for, signed as Standard Webhooks."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='WebhookDelivery',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('endpoint', fields.ForeignKeyField('models.WebhookEndpoint', source_field='endpoint_id', db_constraint=True, to_field='id', related_name='deliveries', on_delete=OnDelete.CASCADE)),
                ('event', fields.ForeignKeyField('models.OutboxEvent', source_field='event_id', db_constraint=True, to_field='id', related_name='deliveries', on_delete=OnDelete.CASCADE)),
                ('status', fields.CharEnumField(default=WebhookDeliveryStatus.PENDING, description='PENDING: PENDING\nSUCCEEDED: SUCCEEDED\nFAILED: FAILED', enum_type=WebhookDeliveryStatus, max_length=10)),
                ('attempts', fields.IntField(default=0)),
                ('next_attempt_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_attempt_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_status_code', fields.IntField(null=True)),
                ('last_latency_ms', fields.IntField(null=True)),
                ('last_response', fields.CharField(null=True, description='The start of the response body', max_length=1024)),
                ('last_error', fields.CharField(null=True, max_length=500)),
                ('delivered_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'webhook_deliveries', 'app': 'models', 'unique_together': (('endpoint_id', 'event_id'),), 'indexes': [Index(fields=['status', 'next_attempt_at']), Index(fields=['endpoint_id', 'id'])], 'pk_attr': 'id', 'table_description': 'One event to one endpoint: due at ``next_attempt_at``, claimed by a worker by moving that forward.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='WebhookAttempt',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('delivery', fields.ForeignKeyField('models.WebhookDelivery', source_field='delivery_id', db_constraint=True, to_field='id', related_name='attempt_log', on_delete=OnDelete.CASCADE)),
                ('attempt', fields.IntField()),
                ('status_code', fields.IntField(null=True)),
                ('latency_ms', fields.IntField(null=True)),
                ('response_body', fields.CharField(null=True, max_length=1024)),
                ('error', fields.CharField(null=True, max_length=500)),
                ('started_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'webhook_attempts', 'app': 'models', 'indexes': [Index(fields=['delivery_id', 'attempt'])], 'pk_attr': 'id', 'table_description': 'One try of a delivery, for the delivery log.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='CreditAccount',
            name='alert_levels',
            field=fields.CharField(null=True, description='Low-balance alert levels, micro-credits, comma-separated', max_length=500),
        ),
        ops.AddField(
            model_name='CreditLot',
            name='expiring_notified_at',
            field=fields.DatetimeField(null=True, description='When credit.expiring was emitted for it', auto_now=False, auto_now_add=False),
        ),
    ]
