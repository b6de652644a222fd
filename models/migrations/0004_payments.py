from tortoise import migrations
from tortoise.migrations import operations as ops
from models.tables import TransactionStatus, TransactionType
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0003_usage_rollups')]

    initial = False

    operations = [
        ops.CreateModel(
            name='InvoiceSequence',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('last_number', fields.BigIntField(default=0)),
            ],
            options={'table': 'invoice_sequence', 'app': 'models', 'pk_attr': 'id', 'table_description': 'One row holding the last invoice number: taking the next one locks it, so numbers have no gaps.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PaymentMethod',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account', fields.ForeignKeyField('models.CreditAccount', source_field='account_id', db_constraint=True, to_field='id', related_name='payment_methods', on_delete=OnDelete.RESTRICT)),
                ('gateway', fields.CharField(max_length=16)),
                ('reference', fields.CharField(description='The gateway reference of the card', max_length=255)),
                ('brand', fields.CharField(max_length=32)),
                ('last4', fields.CharField(max_length=4)),
                ('exp_month', fields.IntField()),
                ('exp_year', fields.IntField()),
                ('is_default', fields.BooleanField(default=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('removed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'payment_methods', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A saved card on a card-on-file gateway. Only the gateway reference is kept, never a card number.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Transaction',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account', fields.ForeignKeyField('models.CreditAccount', source_field='account_id', db_constraint=True, to_field='id', related_name='transactions', on_delete=OnDelete.RESTRICT)),
                ('type', fields.CharEnumField(description='TOP_UP: TOP_UP\nAUTO_TOP_UP: AUTO_TOP_UP\nSUBSCRIPTION: SUBSCRIPTION', enum_type=TransactionType, max_length=16)),
                ('status', fields.CharEnumField(default=TransactionStatus.PENDING, description='PENDING: PENDING\nSUCCEEDED: SUCCEEDED\nFAILED: FAILED', enum_type=TransactionStatus, max_length=12)),
                ('credits', fields.BigIntField()),
                ('amount', fields.BigIntField()),
                ('currency', fields.CharField(max_length=3)),
                ('gateway', fields.CharField(max_length=16)),
                ('payment_method', fields.ForeignKeyField('models.PaymentMethod', source_field='payment_method_id', null=True, db_constraint=True, to_field='id', related_name='transactions', on_delete=OnDelete.RESTRICT)),
                ('gateway_reference', fields.CharField(null=True, max_length=255)),
                ('failure_reason', fields.CharField(null=True, max_length=500)),
                ('lot', fields.ForeignKeyField('models.CreditLot', source_field='lot_id', null=True, db_constraint=True, to_field='id', related_name='transactions', on_delete=OnDelete.RESTRICT)),
                ('idempotency_scope', fields.CharField(max_length=100)),
                ('idempotency_key', fields.CharField(max_length=255)),
                ('request_hash', fields.CharField(max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('completed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'transactions', 'app': 'models', 'unique_together': (('idempotency_scope', 'idempotency_key'),), 'indexes': [Index(fields=['account_id', 'id']), Index(fields=['status', 'created_at'])], 'pk_attr': 'id', 'table_description': 'A payment for credit. PENDING until the gateway confirms it, then SUCCEEDED with a PAID lot, or FAILED.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Invoice',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('number', fields.BigIntField(unique=True)),
                ('transaction', fields.OneToOneField('models.Transaction', source_field='transaction_id', db_constraint=True, to_field='id', related_name='invoice', on_delete=OnDelete.RESTRICT)),
                ('account', fields.ForeignKeyField('models.CreditAccount', source_field='account_id', db_constraint=True, to_field='id', related_name='invoices', on_delete=OnDelete.RESTRICT)),
                ('lines', fields.TextField(description='JSON list of lines: description, quantity, unit amount, amount', unique=False)),
                ('total', fields.BigIntField()),
                ('currency', fields.CharField(max_length=3)),
                ('status', fields.CharField(default='PAID', max_length=8)),
                ('issued_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('paid_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'invoices', 'app': 'models', 'pk_attr': 'id', 'table_description': 'The invoice of one successful payment, numbered in sequence (INV-000123).'},
            bases=['Model'],
        ),
    ]
