"""Environment variable names and defaults, in one place (read inside functions, never at import)."""

from __future__ import annotations

#: Name of the DynamoDB state table (locks, checkpoints, run records).
ENV_STATE_TABLE = "LEANOPS_STATE_TABLE"
DEFAULT_STATE_TABLE = "leanops-state"

#: Where local state lives (DynamoDB Local's files, logs, the installed jar). Default: ``.leanops`` beside the
#: topics file (leanopsctl.local.session.use_project_home), never the working folder.
ENV_HOME = "LEANOPS_HOME"
DEFAULT_HOME = ".leanops"

#: Path of the topics file; ``--config`` wins over it.
ENV_CONFIG = "LEANOPS_CONFIG"
DEFAULT_CONFIG = "topics.yaml"

#: Clock-skew margin between writers, in milliseconds (design §3, I5).
ENV_SKEW_MARGIN_MS = "LEANOPS_SKEW_MARGIN_MS"
DEFAULT_SKEW_MARGIN_MS = 2_000

#: Standard AWS variable that points DynamoDB clients at DynamoDB Local.
ENV_DYNAMODB_ENDPOINT = "AWS_ENDPOINT_URL_DYNAMODB"

#: Path of DynamoDBLocal.jar, overriding the search in node_modules and ``$LEANOPS_HOME/tools``.
ENV_DYNAMODB_LOCAL_JAR = "LEANOPS_DYNAMODB_LOCAL_JAR"

#: The lag objective of topics that set no ``lag_objective_seconds`` (the template passes its
#: DefaultLagObjectiveSeconds parameter); 3600 where unset, as that parameter's default.
ENV_DEFAULT_LAG_OBJECTIVE_SECONDS = "LEANOPS_DEFAULT_LAG_OBJECTIVE_SECONDS"
DEFAULT_LAG_OBJECTIVE_SECONDS = 3600

#: Days each kind of history item stays in the state table (leanops.protocol.model.Retention; the
#: template's RunRecordDays, OutputRecordDays and AuditRecordDays parameters).
ENV_RETENTION_RUNS_DAYS = "LEANOPS_RETENTION_RUNS_DAYS"
ENV_RETENTION_OUTPUTS_DAYS = "LEANOPS_RETENTION_OUTPUTS_DAYS"
ENV_RETENTION_AUDIT_DAYS = "LEANOPS_RETENTION_AUDIT_DAYS"

#: The archive function's root (leanops.archive): ``s3://bucket/prefix/`` in AWS, a folder locally.
ENV_ARCHIVE = "LEANOPS_ARCHIVE"
