"""raymaker's metrics under CloudWatch's names, exported through Ray's metrics pipeline
(``ray.util.metrics``), so one Prometheus scrape of the cluster's nodes sees them next to Ray's own.

``catalog`` declares every metric once (its Prometheus name, CloudWatch namespace, metric name and
dimensions); ``recorder`` records them where they happen (endpoint replicas, training instances);
``engine.job_metrics`` exports what only the job database knows (jobs by status, algorithm metrics,
tuning progress) from the job service."""
