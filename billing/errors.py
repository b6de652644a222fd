"""The refusals of the billing services. Each carries the message the customer is shown; the resolvers map
them to GraphQL results (``PaymentUnavailable``, ``NotFound``, ``ValidationError``,
``SubscriptionNotChangeable``, ``CheckoutCompleted``), and nothing was changed by a refused call."""

from __future__ import annotations


class BillingError(Exception):
    """A billing operation refused; ``str(error)`` says why, in words for the customer."""

    @property
    def message(self) -> str:
        return str(self)


class PaymentUnavailableError(BillingError):
    """The processor could not be reached or cannot take the payment now: sending again may work."""


class PaymentMethodNotFoundError(BillingError):
    """The saved card is not one of the account's (or was removed)."""

    def __init__(self, message: str = "Payment method not found on this account") -> None:
        super().__init__(message)


class PaymentMethodRequiredError(BillingError):
    """The operation charges a saved card, none was given and the account has no default one."""


class InvalidPaymentTokenError(BillingError):
    """The processor refused the card token it was given."""


class SubscriptionNotChangeableError(BillingError):
    """The subscription is not in a state that allows the change, or the processor refused it."""


class CheckoutNotCancelableError(BillingError):
    """The transaction is not a PENDING top-up with an open Checkout page of this gateway."""


class CheckoutCompletedError(BillingError):
    """The customer finished the Checkout page: the processor is confirming the payment, which can no longer be
    canceled (its webhook, or the reconcile job, settles it)."""
