"""Steps: small idempotent units. Each reads the host's facts, changes only what
differs (or, in a dry run, reports what it would change) and returns whether it did."""
