from tortoise import migrations
from tortoise.migrations import operations as ops
from models.tables import SubscriptionStatus
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0005_transaction_card')]

    initial = False

    operations = [
        ops.CreateModel(
            name='AutoTopUp',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account', fields.OneToOneField('models.CreditAccount', source_field='account_id', db_constraint=True, to_field='id', related_name='auto_top_up', on_delete=OnDelete.RESTRICT)),
                ('enabled', fields.BooleanField(default=True)),
                ('threshold', fields.BigIntField()),
                ('amount', fields.BigIntField(null=True)),
                ('target', fields.BigIntField(null=True)),
                ('monthly_cap', fields.BigIntField()),
                ('payment_method', fields.ForeignKeyField('models.PaymentMethod', source_field='payment_method_id', null=True, db_constraint=True, to_field='id', related_name='auto_top_ups', on_delete=OnDelete.RESTRICT)),
                ('pending_transaction', fields.ForeignKeyField('models.Transaction', source_field='pending_transaction_id', null=True, db_constraint=True, to_field='id', related_name='auto_top_up_pending', on_delete=OnDelete.SET_NULL)),
                ('declines', fields.IntField(default=0)),
                ('next_attempt_at', fields.DatetimeField(null=True, description='No new top-up before this instant', auto_now=False, auto_now_add=False)),
                ('disabled_reason', fields.CharField(null=True, max_length=500)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'auto_top_ups', 'app': 'models', 'pk_attr': 'id', 'table_description': 'Automatic top-up of an account: when a spend takes the available balance below ``threshold``, a'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='GatewayCustomer',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account', fields.ForeignKeyField('models.CreditAccount', source_field='account_id', db_constraint=True, to_field='id', related_name='gateway_customers', on_delete=OnDelete.RESTRICT)),
                ('gateway', fields.CharField(max_length=16)),
                ('reference', fields.CharField(max_length=255)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'gateway_customers', 'app': 'models', 'unique_together': (('account_id', 'gateway'), ('gateway', 'reference')), 'pk_attr': 'id', 'table_description': 'The processor customer that stands for an account (Stripe customers), created once per gateway.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Subscription',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account', fields.ForeignKeyField('models.CreditAccount', source_field='account_id', db_constraint=True, to_field='id', related_name='subscriptions', on_delete=OnDelete.RESTRICT)),
                ('plan_id', fields.CharField(max_length=64)),
                ('next_plan_id', fields.CharField(null=True, max_length=64)),
                ('status', fields.CharEnumField(description='INCOMPLETE: INCOMPLETE\nACTIVE: ACTIVE\nPAST_DUE: PAST_DUE\nCANCELED: CANCELED', enum_type=SubscriptionStatus, max_length=12)),
                ('gateway', fields.CharField(max_length=16)),
                ('payment_method', fields.ForeignKeyField('models.PaymentMethod', source_field='payment_method_id', null=True, db_constraint=True, to_field='id', related_name='subscriptions', on_delete=OnDelete.RESTRICT)),
                ('external_reference', fields.CharField(null=True, description='The processor subscription id', max_length=255)),
                ('current_period_start', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('current_period_end', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('cancel_at_period_end', fields.BooleanField(default=False)),
                ('canceled_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('status_reason', fields.CharField(null=True, description='Why it is PAST_DUE or CANCELED', max_length=500)),
                ('failed_attempts', fields.IntField(default=0, description='Failed renewal charges in a row')),
                ('next_attempt_at', fields.DatetimeField(null=True, description='When a PAST_DUE renewal is charged again', auto_now=False, auto_now_add=False)),
                ('idempotency_scope', fields.CharField(max_length=100)),
                ('idempotency_key', fields.CharField(max_length=255)),
                ('request_hash', fields.CharField(max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'subscriptions', 'app': 'models', 'unique_together': (('idempotency_scope', 'idempotency_key'),), 'indexes': [Index(fields=['account_id', 'id']), Index(fields=['status', 'current_period_end']), Index(fields=['external_reference'])], 'pk_attr': 'id', 'table_description': 'A plan an account pays for each period, and each paid period grants the plan credit as a PAID lot.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='WebhookEvent',
            fields=[
                ('id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=255)),
                ('gateway', fields.CharField(max_length=16)),
                ('type', fields.CharField(max_length=100)),
                ('payload', fields.TextField(unique=False)),
                ('created_at', fields.DatetimeField(description='When the processor created the event', auto_now=False, auto_now_add=False)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('processed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'webhook_events', 'app': 'models', 'indexes': [Index(fields=['processed_at', 'created_at'])], 'pk_attr': 'id', 'table_description': 'A processor event, stored once by its id before it is handled, so a redelivery is recognised.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Transaction',
            name='checkout_url',
            field=fields.CharField(null=True, description='Hosted checkout page to pay at', max_length=2000),
        ),
        ops.AddField(
            model_name='Transaction',
            name='period_end',
            field=fields.DatetimeField(null=True, description='End of the subscription period paid for', auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Transaction',
            name='period_start',
            field=fields.DatetimeField(null=True, description='Start of the subscription period paid for', auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Transaction',
            name='subscription',
            field=fields.ForeignKeyField('models.Subscription', source_field='subscription_id', null=True, db_constraint=True, to_field='id', related_name='transactions', on_delete=OnDelete.RESTRICT),
        ),
    ]
