"""raymaker's web console: read-only pages of training jobs, tuning jobs, endpoints and transform jobs
(status, timing, metric charts, hyperparameters, trials, log tails), served by ``raymaker server``
under ``/console/`` behind the API's own access rules (``app.Console``)."""
