#!/usr/bin/env bash
# Installs what the test-suite needs on Debian and makes sure a PostgreSQL server answers.
# Prints, as its last line, the SQLAlchemy URL of the PostgreSQL server the tests should use.
set -euo pipefail

log() { echo "test-deps: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; exit 1; fi
}

apt_updated=0
need_pkg() {  # need_pkg PACKAGE: install a Debian package if it is missing
  if ! dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; then
    if [ "$apt_updated" = 0 ]; then
      log "apt-get update"; as_root apt-get update -qq >&2; apt_updated=1
    fi
    log "installing $1"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >&2
  fi
}

# Real SMTP peers and their TLS/SASL perl modules (swaks).
for pkg in swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl libdigest-hmac-perl curl fail2ban; do
  need_pkg "$pkg"
done

# Redis for tests/interop/test_bans.py: bans and strike counters shared by instances
# (`[cluster] redis_url`); each test starts its own redis-server on a free loopback port.
need_pkg redis-server

# A real IMAP sync client for tests/interop/test_imap.py (mbsync).
need_pkg isync

# A real mail client with GNU SASL for tests/interop/test_mutt.py (mutt).
need_pkg mutt

# TLS scanners for the policy tests (tests/interop/test_tls_policy.py, test_testssl.py).
for pkg in testssl.sh sslscan; do need_pkg "$pkg"; done

# Real DNS for tests/dnsserver.py: NSD (authoritative), Unbound (validating resolver), and
# ldns-keygen / ldns-signzone (ldnsutils) to sign test zones.
for pkg in nsd unbound ldnsutils; do need_pkg "$pkg"; done

# Postfix's smtp-sink: a real SMTP server for the outbound client's tests (tests/smtpclient/).
# "No configuration": the package installs without setting up, or starting, a mail system.
if ! dpkg-query -W -f='${Status}' postfix 2>/dev/null | grep -q "install ok installed"; then
  echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
fi
need_pkg postfix

# A second, independent DKIM verifier for tests/mailauth/test_opendkim.py: the opendkim filter
# in test mode (-t), whose libunbound is pointed at the tests' NSD.
need_pkg opendkim

# Kerberos for tests/interop/test_gssapi.py: an MIT KDC and its tools, perl GSSAPI (a second
# client), and what building the `gssapi` extra from source needs: krb5-config, a C compiler,
# and Python headers (python3-dev only if the venv's Python has none).
for pkg in libkrb5-dev krb5-kdc krb5-admin-server krb5-user libgssapi-perl gcc libc6-dev; do
  need_pkg "$pkg"
done
py=.venv/bin/python; [ -x "$py" ] || py=python3
"$py" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("include"), "Python.h")))' ||
  need_pkg python3-dev

# A real clamd for tests/interop/test_antivirus.py (tests/clamd.py starts its own, on loopback,
# with a local signature database) and the ClamAV test files it must catch. The package's own
# daemon and signature updater are not started by the tests.
for pkg in clamav-daemon clamav-testfiles; do need_pkg "$pkg"; done

# Real milters for tests/interop/test_milter.py (tests/milters.py starts each on loopback):
# OpenDKIM signing and verifying (opendkim-tools: opendkim-genkey, opendkim-testkey),
# clamav-milter in front of the tests' clamd, rspamd's proxy worker in milter mode.
for pkg in opendkim opendkim-tools clamav-milter rspamd; do need_pkg "$pkg"; done

# A real browser for tests/interop/test_web_browser.py: Debian's chromium, driven by Playwright
# (the `test` extra) through /usr/bin/chromium (`playwright install` is never needed).
need_pkg chromium

# PostgreSQL: use the one on 127.0.0.1:5432 if it lets us in without a password, else run a
# private throw-away cluster (trust auth, loopback only) on port 55432.
pg_ok() { python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
PY
}
if pg_ok 5432 && PGCONNECT_TIMEOUT=3 psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
  echo "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
  exit 0
fi
need_pkg postgresql
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
pgdir=/tmp/postkeep-test-pg
if ! pg_ok 55432; then
  log "starting a private PostgreSQL on 127.0.0.1:55432 ($pgdir)"
  if [ ! -f "$pgdir/PG_VERSION" ]; then
    as_root rm -rf "$pgdir"; as_root mkdir -p "$pgdir"; as_root chown postgres: "$pgdir"
    as_root runuser -u postgres -- "$bindir/initdb" -D "$pgdir" -A trust -U postgres >/dev/null
  fi
  as_root runuser -u postgres -- "$bindir/pg_ctl" -D "$pgdir" -l "$pgdir/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p 55432 -k $pgdir -c fsync=off" start >&2
fi
echo "postgresql+psycopg://postgres@127.0.0.1:55432/postgres"
