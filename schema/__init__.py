"""GraphQL types: scalars, object types, inputs, results and typed errors. No data access here."""
