"""The job database as raymaker 0.1 keeps it: training jobs, their metrics and logs, the other
resources, the audit trail, users and their keys and policies, owners, the endpoints' meter, the job
services' heartbeats.

A SQLite file made before migrations existed (``PRAGMA user_version`` 1 to 6) is adopted: the tables
it lacks are made and the columns it lacks are added, so its records stay.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# SageMaker's names are case-insensitive: SQLite compares them NOCASE, PostgreSQL keeps them citext.
NAME = sa.Text(collation="NOCASE").with_variant(postgresql.CITEXT(), "postgresql")
TIME = sa.Double()  # epoch seconds; PostgreSQL's REAL would be single precision
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY is the rowid

metadata = sa.MetaData()

sa.Table(
    "training_jobs", metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("arn", sa.Text, nullable=False),
    sa.Column("request", sa.Text, nullable=False),  # the CreateTrainingJob request, JSON
    sa.Column("status", sa.Text, nullable=False),  # TrainingJobStatus
    sa.Column("secondary_status", sa.Text, nullable=False),
    sa.Column("transitions", sa.Text, nullable=False, server_default="[]"),  # JSON
    sa.Column("failure_reason", sa.Text),
    sa.Column("final_metrics", sa.Text),  # FinalMetricDataList, JSON
    sa.Column("model_artifacts", sa.Text),
    sa.Column("creation_time", TIME, nullable=False),
    sa.Column("training_start_time", TIME),
    sa.Column("training_end_time", TIME),
    sa.Column("last_modified_time", TIME, nullable=False),
    sa.Column("training_seconds", sa.BigInteger),  # wall clock (TrainingTimeInSeconds)
    sa.Column("billable_seconds", sa.BigInteger),  # instance-seconds
    sa.Column("cost", TIME),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),  # RetryStrategy adds more
    sa.Column("restart_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("warm_pool_status", sa.Text),  # JSON
    sa.Column("tuning_job_arn", sa.Text),
    sa.Column("runner_id", sa.Text),  # which job service runs it (orphan detection)
    sa.Column("heartbeat_time", TIME),
    sa.Index("training_jobs_status", "status", "creation_time"),
    sa.Index("training_jobs_created", "creation_time"),
)
sa.Table(
    "metrics", metadata,
    sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("job", NAME, nullable=False),
    sa.Column("metric", sa.Text, nullable=False),
    sa.Column("value", TIME, nullable=False),
    sa.Column("step", sa.BigInteger),
    sa.Column("timestamp", TIME, nullable=False),
    sa.Index("metrics_job", "job", "metric", "timestamp"),
)
sa.Table(
    "logs", metadata,
    sa.Column("job", NAME, primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),  # 1, 2, ... per job
    sa.Column("time", TIME, nullable=False),
    sa.Column("line", sa.Text, nullable=False),
)
sa.Table(
    "audit_events", metadata,
    sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("event_time", TIME, nullable=False),
    sa.Column("event_name", sa.Text, nullable=False),
    sa.Column("request_parameters", sa.Text),
    sa.Column("error_code", sa.Text),
    sa.Column("error_message", sa.Text),
    sa.Column("user_identity", sa.Text),
    sa.Column("source_ip", sa.Text),
    sa.Column("user_agent", sa.Text),
    sa.Column("region", sa.Text),
    sa.Column("request_id", sa.Text),
    sa.Column("user_name", NAME),  # userIdentity's userName, for `raymaker audit --user`
    sa.Column("resource", sa.Text),  # the ARN the call acted on
    sa.Index("audit_events_name", "event_name", "event_time"),
    sa.Index("audit_events_time", "event_time"),
    sqlite_autoincrement=True,  # ids are never reused, so paging by id never skips an event
)
sa.Table(
    "users", metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("create_time", TIME, nullable=False),
)
sa.Table(
    "access_keys", metadata,
    sa.Column("access_key_id", sa.Text, primary_key=True),
    sa.Column("user_name", NAME, nullable=False),
    sa.Column("secret", sa.Text, nullable=False),  # SigV4 needs it to check signatures
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("create_time", TIME, nullable=False),
    sa.Index("access_keys_user", "user_name"),
)
sa.Table(
    "user_policies", metadata,
    sa.Column("user_name", NAME, primary_key=True),
    sa.Column("policy_name", sa.Text, primary_key=True),
    sa.Column("document", sa.Text, nullable=False),  # the policy JSON as given
)
sa.Table(
    "owners", metadata,
    sa.Column("arn", sa.Text, primary_key=True),
    sa.Column("user_name", NAME, nullable=False),
)
sa.Table(
    "endpoint_meter", metadata,
    sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("endpoint", NAME, nullable=False),
    sa.Column("arn", sa.Text, nullable=False),
    sa.Column("variant", sa.Text, nullable=False),
    sa.Column("instance_type", sa.Text, nullable=False),
    sa.Column("instance_count", sa.Integer, nullable=False),
    sa.Column("price_per_hour", TIME, nullable=False),
    sa.Column("start_time", TIME, nullable=False),
    sa.Column("end_time", TIME),  # NULL while it runs
    sa.Index("endpoint_meter_arn", "arn", "start_time"),
    sqlite_autoincrement=True,
)
sa.Table(
    "services", metadata,
    sa.Column("id", sa.Text, primary_key=True),  # the job service's Ray actor id
    sa.Column("pid", sa.Integer),
    sa.Column("started_time", TIME, nullable=False),
    sa.Column("heartbeat_time", TIME, nullable=False),
)
sa.Table(
    "resources", metadata,  # models, endpoint configs, endpoints, transform jobs, tuning jobs, ...
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("name", NAME, primary_key=True),
    sa.Column("arn", sa.Text, nullable=False),
    sa.Column("request", sa.Text, nullable=False),  # the Create* request, JSON
    sa.Column("status", sa.Text),
    sa.Column("failure_reason", sa.Text),
    sa.Column("state", sa.Text, nullable=False, server_default="{}"),  # runner bookkeeping, JSON
    sa.Column("creation_time", TIME, nullable=False),
    sa.Column("last_modified_time", TIME, nullable=False),
    sa.Column("start_time", TIME),
    sa.Column("end_time", TIME),
    sa.Column("runner_id", sa.Text),  # the job service running it now
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS citext")  # trusted: a database owner may create it
    inspector = sa.inspect(bind)
    existing = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing:
            table.create(bind)
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have and not column.primary_key:
                op.add_column(table.name, sa.Column(column.name, column.type))


def downgrade() -> None:
    for table in reversed(metadata.sorted_tables):
        op.drop_table(table.name)
