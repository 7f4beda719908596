"""Network plumbing shared by every listener: TLS contexts, connection limits."""
