"""In-process telemetry: windows, histograms, drift samples, Prometheus, the event log."""
