"""The store: engine and transactions, schema, migrations, hot statements, leases."""
