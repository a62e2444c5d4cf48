"""The SageMaker API as both sides of the seam speak it: the service model (botocore's SageMaker model
plus raymaker's own operations), SageMaker's errors, and the ``Backend`` protocol. The SDK and the CLI
depend on this package, never on the engine; the engine implements it."""
