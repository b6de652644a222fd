"""Errors raised to the top level of a response (queries have no result unions). Never masked."""

from __future__ import annotations

from graphql import GraphQLError


class ClientError(GraphQLError):
    """A mistake in the request that the client can fix; shown as is, with a stable ``code``."""

    def __init__(self, message: str, code: str = "BAD_REQUEST") -> None:
        super().__init__(message, extensions={"code": code})


class Unauthenticated(ClientError):
    def __init__(self, message: str = "Send a valid token as 'Authorization: Bearer <token>'") -> None:
        super().__init__(message, "UNAUTHENTICATED")


class ForbiddenError(ClientError):
    def __init__(self, message: str = "You may not see this") -> None:
        super().__init__(message, "FORBIDDEN")
