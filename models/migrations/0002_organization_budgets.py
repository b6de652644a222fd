from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='BudgetUsage',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organization', fields.ForeignKeyField('models.Organization', source_field='organization_id', db_constraint=True, to_field='id', related_name='budget_usage', on_delete=OnDelete.CASCADE)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='budget_usage', on_delete=OnDelete.CASCADE)),
                ('month', fields.CharField(description='YYYY-MM in UTC', max_length=7)),
                ('spent', fields.BigIntField(default=0)),
            ],
            options={'table': 'budget_usage', 'app': 'models', 'unique_together': (('organization', 'user', 'month'),), 'pk_attr': 'id', 'table_description': 'What a member spent from a shared pool in one calendar month (UTC), kept in the spend transaction.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='MemberBudget',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organization', fields.ForeignKeyField('models.Organization', source_field='organization_id', db_constraint=True, to_field='id', related_name='budgets', on_delete=OnDelete.CASCADE)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='budgets', on_delete=OnDelete.CASCADE)),
                ('monthly_limit', fields.BigIntField()),
            ],
            options={'table': 'member_budgets', 'app': 'models', 'unique_together': (('organization', 'user'),), 'pk_attr': 'id', 'table_description': 'The monthly limit of a member on spending from the shared pool of an organization, in micro-credits.'},
            bases=['Model'],
        ),
    ]
