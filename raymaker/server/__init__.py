"""raymaker as a shared service: SageMaker's API over HTTP(S), signed requests, users and permissions
(``raymaker server``)."""
