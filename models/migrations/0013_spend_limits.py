from tortoise import migrations
from tortoise.migrations import operations as ops
from models.tables import LimitAction, LimitKind, LimitScope, LimitWindow, RollupDimension
from tortoise.fields.base import OnDelete
from tortoise import fields

RESTORE_ROLLUP_INDEXES = [
    'CREATE UNIQUE INDEX IF NOT EXISTS "uid_usage_rollu_account_8c5ef0"'
    ' ON "usage_rollups" ("account_id", "dimension", "bucket", "key", "organization_key")',
    'CREATE INDEX IF NOT EXISTS "idx_usage_rollu_organiz_8efd16"'
    ' ON "usage_rollups" ("organization_key", "dimension", "bucket", "key")',
]


class Migration(migrations.Migration):
    dependencies = [('models', '0012_integration')]

    initial = False

    operations = [
        ops.CreateModel(
            name='SpendLimit',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account', fields.ForeignKeyField('models.CreditAccount', source_field='account_id', db_constraint=True, to_field='id', related_name='spend_limits_set', on_delete=OnDelete.CASCADE)),
                ('scope', fields.CharEnumField(description='ACCOUNT: ACCOUNT\nMEMBER: MEMBER\nAGENT: AGENT\nTOKEN: TOKEN', enum_type=LimitScope, max_length=8)),
                ('subject', fields.CharField(max_length=220)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', null=True, db_constraint=True, to_field='id', related_name='spend_limits', on_delete=OnDelete.CASCADE)),
                ('agent_id', fields.CharField(null=True, max_length=200)),
                ('token', fields.ForeignKeyField('models.ApiToken', source_field='token_id', null=True, db_constraint=True, to_field='id', related_name='spend_limits', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharEnumField(default=LimitKind.CAP, description='CAP: CAP\nVELOCITY: VELOCITY', enum_type=LimitKind, max_length=8)),
                ('window', fields.CharEnumField(description='DAY: DAY\nWEEK: WEEK\nMONTH: MONTH\nROLLING_HOURS: ROLLING_HOURS\nTOTAL: TOTAL\nROLLING_MINUTES: ROLLING_MINUTES', enum_type=LimitWindow, max_length=16)),
                ('window_length', fields.IntField(default=1, description='Hours of ROLLING_HOURS, minutes of ROLLING_MINUTES')),
                ('time_zone', fields.CharField(default='UTC', description='IANA zone of DAY, WEEK and MONTH', max_length=64)),
                ('amount', fields.BigIntField()),
                ('action', fields.CharEnumField(default=LimitAction.BLOCK, description='BLOCK: BLOCK\nNOTIFY: NOTIFY', enum_type=LimitAction, max_length=8)),
                ('warn_percent', fields.IntField(null=True, description='Warn once usage reaches this percent of amount')),
                ('max_credits_per_run', fields.BigIntField(null=True)),
                ('cooldown_seconds', fields.IntField(null=True, description='Velocity: pause length (null: until resumed)')),
                ('tripped_at', fields.DatetimeField(null=True, description='Velocity: when it last tripped', auto_now=False, auto_now_add=False)),
                ('paused_until', fields.DatetimeField(null=True, description='Velocity: the pause ends (null: until resumed)', auto_now=False, auto_now_add=False)),
                ('paused', fields.BooleanField(default=False, description='Velocity: the subject is paused', db_default=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'spend_limits', 'app': 'models', 'unique_together': (('account_id', 'subject', 'kind', 'window', 'window_length', 'action'),), 'pk_attr': 'id', 'table_description': 'A limit on spending from one account by a subject: the whole account, a member, an agent or a token.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SpendLimitUsage',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('limit', fields.ForeignKeyField('models.SpendLimit', source_field='limit_id', db_constraint=True, to_field='id', related_name='usage', on_delete=OnDelete.CASCADE)),
                ('run_id', fields.CharField(default='', max_length=200)),
                ('period', fields.BigIntField()),
                ('spent', fields.BigIntField(default=0)),
            ],
            options={'table': 'spend_limit_usage', 'app': 'models', 'unique_together': (('limit_id', 'run_id', 'period'),), 'pk_attr': 'id', 'table_description': 'What was spent against one limit in one period, kept in the spend transaction.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='ApiToken',
            name='activities',
            field=fields.CharField(null=True, description='Space-separated allowed activities', max_length=2000),
        ),
        ops.AddField(
            model_name='ApiToken',
            name='agent_id',
            field=fields.CharField(null=True, max_length=200),
        ),
        ops.AddField(
            model_name='CreditAccount',
            name='overdraft',
            field=fields.BigIntField(default=0, description='How far below zero available may go, in micro-credits', db_default=0),
        ),
        ops.AddField(
            model_name='CreditAccount',
            name='owed',
            field=fields.BigIntField(default=0, description='Credit spent beyond the lots, to be paid back by grants', db_default=0),
        ),
        ops.AddField(
            model_name='CreditAccount',
            name='spend_limits',
            field=fields.IntField(default=0, description='How many spend limits the account has', db_default=0),
        ),
        ops.AddField(
            model_name='Hold',
            name='quantity',
            field=fields.BigIntField(null=True, description='Units priced by the rate card, in millionths'),
        ),
        ops.AddField(
            model_name='Hold',
            name='run_id',
            field=fields.CharField(null=True, description='The agent run it belongs to', max_length=200),
        ),
        ops.AddField(
            model_name='Hold',
            name='token_id',
            field=fields.BigIntField(null=True, description='The API token that placed it'),
        ),
        ops.AddField(
            model_name='LedgerEntry',
            name='owed_delta',
            field=fields.BigIntField(default=0, db_default=0),
        ),
        ops.AddField(
            model_name='UsageEvent',
            name='owed_credits',
            field=fields.BigIntField(default=0, description='The part spent on overdraft, owed by the account', db_default=0),
        ),
        ops.AddField(
            model_name='UsageEvent',
            name='run_id',
            field=fields.CharField(null=True, description='The agent run it belongs to', max_length=200),
        ),
        ops.AddField(
            model_name='UsageEvent',
            name='token_id',
            field=fields.BigIntField(null=True, description='The API token that spent it'),
        ),
        ops.AlterField(
            model_name='UsageRollup',
            name='dimension',
            field=fields.CharEnumField(description='ACTIVITY: ACTIVITY\nAGENT: AGENT\nMEMBER: MEMBER\nRUN: RUN', enum_type=RollupDimension, max_length=8),
        ),
        # Altering a column makes the table anew on SQLite, without its unique key and index: make them again
        # (on PostgreSQL they exist under these names, and IF NOT EXISTS leaves them).
        ops.RunSQL(RESTORE_ROLLUP_INDEXES),
    ]
