from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0004_payments')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Transaction',
            name='card_reference',
            field=fields.CharField(null=True, description='The card charged, for reconciling', max_length=255),
        ),
    ]
