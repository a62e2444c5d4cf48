"""Alembic's entry: runs the migrations on the connection the job database hands it
(``raymaker.engine.database``), inside that connection's transaction."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
