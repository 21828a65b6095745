"""Reports over stored telemetry: SLOs and error budgets, and the documents people sign."""
