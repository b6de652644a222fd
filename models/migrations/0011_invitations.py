from tortoise import migrations
from tortoise.migrations import operations as ops
from models.tables import InvitationStatus
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0010_invoice_sequence_seed')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Invitation',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organization', fields.ForeignKeyField('models.Organization', source_field='organization_id', db_constraint=True, to_field='id', related_name='invitations', on_delete=OnDelete.CASCADE)),
                ('email', fields.CharField(description="Lower-cased, as users' emails are", max_length=320)),
                ('roles', fields.CharField(description='Comma-separated MemberRole values', max_length=64)),
                ('status', fields.CharEnumField(default=InvitationStatus.PENDING, description='PENDING: PENDING\nACCEPTED: ACCEPTED\nDECLINED: DECLINED\nREVOKED: REVOKED\nEXPIRED: EXPIRED', enum_type=InvitationStatus, max_length=10)),
                ('invited_by', fields.ForeignKeyField('models.User', source_field='invited_by_id', null=True, db_constraint=True, to_field='id', related_name='invitations_sent', on_delete=OnDelete.SET_NULL)),
                ('closed_by', fields.ForeignKeyField('models.User', source_field='closed_by_id', null=True, db_constraint=True, to_field='id', related_name='invitations_closed', on_delete=OnDelete.SET_NULL)),
                ('idempotency_scope', fields.CharField(max_length=100)),
                ('idempotency_key', fields.CharField(null=True, max_length=255)),
                ('request_hash', fields.CharField(max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('closed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'invitations', 'app': 'models', 'unique_together': (('idempotency_scope', 'idempotency_key'),), 'indexes': [Index(fields=['organization_id', 'status']), Index(fields=['email', 'status'])], 'pk_attr': 'id', 'table_description': 'An invitation to join an organization with some roles, addressed to an email.'},
            bases=['Model'],
        ),
    ]
