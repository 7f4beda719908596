"""The web listener: HTTPS account pages (later webmail, admin), client autoconfiguration and
the HTTP redirect, served by aiohttp in every worker process (docs/architecture.md, "Web").

`server` (the listeners: our `Listeners` in front of aiohttp's HTTP/1.1 server), `app` (what
every request goes through: host check, body limits, sessions, cross-site and CSRF checks,
security headers), `security` (sans-IO: headers, cookies, tokens), `login` (the login's state
machine; the seam for second factors), `factors` (TOTP and passkeys as second factors),
`pages` (the handlers), `twofactor` (the 2FA and passkey pages), `autoconfig` (the public
client-autoconfiguration routes and the MTA-STS policy file), `service` (what a worker
starts). Exposure: `app`, `server`, `pages`, `twofactor` and `autoconfig` face
unauthenticated clients; `pages` and `twofactor` check every action against the logged-in
account. Only `postkeep.server` imports this package.
"""
