"""Data migrations: dual write and read, the audit between two databases, reconcile, cohorts."""
