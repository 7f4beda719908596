"""The outbound queue's delivery side: routes (MX), attempts over SMTP, outcomes, notices (DSN).

The store keeps the queue (`postkeep.store.sql.outbound`); `runner` claims due entries and
delivers them, `routes` finds where a domain's mail goes (RFC 5321 §5.1), `remote` makes one
SMTP attempt with the client of `postkeep.smtp.client`, `schedule` decides when to try again,
to warn or to give up, and `dsn` writes the delivery status notifications (RFC 3464).
`mtasts` finds, fetches and caches recipient domains' MTA-STS policies (RFC 8461), parsed by
the sans-IO `mtasts_policy`.
"""
