from tortoise import migrations
from tortoise.migrations import operations as ops
from models.tables import RefundStatus
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0006_subscriptions_auto_top_up_webhooks')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Refund',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('transaction', fields.ForeignKeyField('models.Transaction', source_field='transaction_id', db_constraint=True, to_field='id', related_name='refunds', on_delete=OnDelete.RESTRICT)),
                ('account', fields.ForeignKeyField('models.CreditAccount', source_field='account_id', db_constraint=True, to_field='id', related_name='refunds', on_delete=OnDelete.RESTRICT)),
                ('status', fields.CharEnumField(description='PENDING: PENDING\nSUCCEEDED: SUCCEEDED\nFAILED: FAILED', enum_type=RefundStatus, max_length=12)),
                ('amount', fields.BigIntField()),
                ('credits', fields.BigIntField(default=0)),
                ('reason', fields.CharField(null=True, max_length=500)),
                ('gateway_reference', fields.CharField(null=True, max_length=255)),
                ('failure_reason', fields.CharField(null=True, max_length=500)),
                ('idempotency_scope', fields.CharField(max_length=100)),
                ('idempotency_key', fields.CharField(max_length=255)),
                ('request_hash', fields.CharField(max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('completed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'refunds', 'app': 'models', 'unique_together': (('idempotency_scope', 'idempotency_key'),), 'indexes': [Index(fields=['transaction_id', 'id'])], 'pk_attr': 'id', 'table_description': 'Money returned for a successful payment, in minor units of the payment currency.'},
            bases=['Model'],
        ),
    ]
