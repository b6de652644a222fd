from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0002_organization_budgets')]

    initial = False

    operations = [
        ops.CreateModel(
            name='UsageRollup',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account_id', fields.BigIntField()),
                ('organization_key', fields.BigIntField(default=0)),
                ('user_id', fields.BigIntField()),
                ('activity', fields.CharField(max_length=100)),
                ('agent_id', fields.CharField(max_length=200)),
                ('bucket', fields.DatetimeField(description='Start of the UTC hour', auto_now=False, auto_now_add=False)),
                ('events', fields.BigIntField(default=0)),
                ('credits', fields.BigIntField(default=0)),
                ('free_credits', fields.BigIntField(default=0)),
                ('paid_credits', fields.BigIntField(default=0)),
            ],
            options={'table': 'usage_rollups', 'app': 'models', 'unique_together': (('account_id', 'organization_key', 'user_id', 'activity', 'agent_id', 'bucket'),), 'indexes': [Index(fields=['organization_key', 'bucket']), Index(fields=['account_id', 'bucket'])], 'pk_attr': 'id', 'table_description': 'Usage summed per hour (UTC), account, organization, member, activity and agent.'},
            bases=['Model'],
        ),
    ]
