"""What the worker tells an operator: Prometheus metrics, health endpoints, JSON logs and optional traces.

- `metrics`: aicd's own metric families (prometheus_client) with bounded labels, and the collector that
  folds the Temporal SDK's runtime metrics into the same `/metrics` answer;
- `interceptor`: a Temporal worker interceptor that records deliveries, steps, analyses, rollbacks and
  fleet sites from what the worker sees - workflow code stays free of I/O and replays unchanged;
- `census`: deliveries in flight by phase, counted in Temporal's visibility store;
- `server`: `/metrics`, `/healthz` (liveness) and `/readyz` (Temporal reachable) of the worker;
- `logs`: text or JSON log lines carrying the delivery ID, app, stage and target of the activity that logged;
- `tracing`: OpenTelemetry through Temporal's tracing interceptor, on when the standard OTEL_* variables
  ask for it (the `otel` extra installs the SDK and the OTLP exporter).
"""
