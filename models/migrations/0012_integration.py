from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from models.tables import TokenKind
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0011_invitations')]

    initial = False

    operations = [
        ops.CreateModel(
            name='PortalCode',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account', fields.ForeignKeyField('models.CreditAccount', source_field='account_id', db_constraint=True, to_field='id', related_name='portal_codes', on_delete=OnDelete.CASCADE)),
                ('code_hash', fields.CharField(unique=True, max_length=64)),
                ('created_by', fields.CharField(description='The idempotency scope of who minted it', max_length=100)),
                ('return_url', fields.CharField(null=True, max_length=2000)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'portal_codes', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A short-lived, single-use code in a portal link: exchanging it opens a portal session (a PORTAL token).'},
            bases=['Model'],
        ),
        ops.AlterField(
            model_name='ApiToken',
            name='kind',
            field=fields.CharEnumField(description='USER: USER\nSERVICE: SERVICE\nADMIN: ADMIN\nPORTAL: PORTAL', enum_type=TokenKind, max_length=8),
        ),
        ops.AddField(
            model_name='ApiToken',
            name='account',
            field=fields.ForeignKeyField('models.CreditAccount', source_field='account_id', null=True, db_constraint=True, to_field='id', related_name='tokens', on_delete=OnDelete.CASCADE),
        ),
        ops.AddField(
            model_name='ApiToken',
            name='expires_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='ApiToken',
            name='idle_timeout_seconds',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='ApiToken',
            name='last_used_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='ApiToken',
            name='prefix',
            field=fields.CharField(null=True, max_length=16),
        ),
        ops.AddField(
            model_name='Organization',
            name='external_id',
            field=fields.CharField(null=True, unique=True, max_length=255),
        ),
        ops.AddField(
            model_name='Organization',
            name='metadata',
            field=fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='User',
            name='external_id',
            field=fields.CharField(null=True, unique=True, max_length=255),
        ),
        ops.AddField(
            model_name='User',
            name='metadata',
            field=fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
    ]
