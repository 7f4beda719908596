"""The SQL implementation of the `postkeep.store.api.Store` interface (SQLAlchemy Core, on
SQLite or PostgreSQL): schema and migrations, the group-commit writer, the hot path's
prepared statements, mailbox operations, account security and the outbound queue."""
