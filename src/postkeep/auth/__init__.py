"""Authentication as a service for every protocol: password hashing and verification
(`passwords`), and the SASL exchange with a protocol-neutral outcome (`exchange`) that SMTP and
IMAP each render in their own replies."""
