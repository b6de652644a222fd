from typing import ClassVar

from tortoise import migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    """Deliveries by event: the sweep keeps an event with a PENDING delivery (``models.outbox.PRUNABLE``), and
    deleting an event cascades to its deliveries; both looked them up by ``event_id``, which no index led with."""

    dependencies: ClassVar = [("models", "0018_limit_reached_period")]

    initial = False

    operations: ClassVar = [
        ops.AddIndex(
            model_name="WebhookDelivery",
            index=Index(fields=["event_id", "status"]),
        ),
    ]
