"""Resolvers: authentication, authorization, validation and orchestration over the data layer."""
