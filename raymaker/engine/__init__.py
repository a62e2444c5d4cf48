"""The control plane: request validation against botocore's SageMaker model, job records (SQLite),
the training-job state machine and its policies, instance types from the cluster YAML, and metering."""
