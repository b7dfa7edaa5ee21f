"""Steps: small idempotent units. Each is a generator: it reads the host's facts
(deploy.host.HostContext) and yields operations (deploy.ops) only for what differs;
the runner executes them, or in a dry run lists them."""
