"""Tests of the GraphQL API (schema/, resolvers/) as clients meet it."""
