from tortoise import migrations
from tortoise.migrations import operations as ops
from models.tables import RollupDimension
from tortoise import fields
from tortoise.indexes import Index

# The rollups become one row per hour and dimension (activity, agent or member) instead of one per hour and
# combination of the three. The old rows are set aside, the table is made anew, and the new rows
# are summed from the old ones: the same totals, in plain SQL that both SQLite and PostgreSQL run.
SET_ASIDE = [
    'CREATE TABLE usage_rollups_0006 AS SELECT * FROM usage_rollups',
]
_COPY = (
    'INSERT INTO usage_rollups (account_id, organization_key, dimension, key, bucket, events, credits,'
    ' free_credits, paid_credits)'
    " SELECT account_id, organization_key, '{dimension}', {key}, bucket, SUM(events), SUM(credits),"
    ' SUM(free_credits), SUM(paid_credits) FROM usage_rollups_0006'
    ' GROUP BY account_id, organization_key, {key}, bucket'
)
CARRY_OVER = [
    _COPY.format(dimension='ACTIVITY', key='activity'),
    _COPY.format(dimension='AGENT', key='agent_id'),
    _COPY.format(dimension='MEMBER', key='CAST(user_id AS TEXT)'),
    'DROP TABLE usage_rollups_0006',
]


class Migration(migrations.Migration):
    dependencies = [('models', '0007_refunds')]

    initial = False

    operations = [
        ops.RunSQL(SET_ASIDE),
        # SQLite keeps the old unique key inside the table definition, where no ALTER reaches it: recreate.
        ops.DeleteModel(name='UsageRollup'),
        ops.CreateModel(
            name='UsageRollup',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account_id', fields.BigIntField()),
                ('organization_key', fields.BigIntField(default=0)),
                ('dimension', fields.CharEnumField(description='ACTIVITY: ACTIVITY\nAGENT: AGENT\nMEMBER: MEMBER', enum_type=RollupDimension, max_length=8)),
                ('key', fields.CharField(description='The activity, the agent id or the member user id', max_length=200)),
                ('bucket', fields.DatetimeField(description='Start of the UTC hour', auto_now=False, auto_now_add=False)),
                ('events', fields.BigIntField(default=0)),
                ('credits', fields.BigIntField(default=0)),
                ('free_credits', fields.BigIntField(default=0)),
                ('paid_credits', fields.BigIntField(default=0)),
            ],
            options={'table': 'usage_rollups', 'app': 'models', 'unique_together': (('account_id', 'dimension', 'bucket', 'key', 'organization_key'),), 'indexes': [Index(fields=['organization_key', 'dimension', 'bucket', 'key'])], 'pk_attr': 'id', 'table_description': 'Usage summed per hour (UTC), account, organization and one dimension: activity, agent or member.'},
            bases=['Model'],
        ),
        ops.RunSQL(CARRY_OVER),
    ]
