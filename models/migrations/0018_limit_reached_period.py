from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0017_rollups_by_hour')]

    initial = False

    operations = [
        ops.AddField(
            model_name='SpendLimit',
            name='reached_period',
            field=fields.BigIntField(null=True, description='The period whose reached event was emitted'),
        ),
    ]
