"""Typed configuration, loaded from TOML (the instance's `postkeep.toml`).

Every key is a dataclass field of a section module (`sections`, `smtp`, `imap`, `dns`,
`delivery`, `sending`, `dkim`, `inbound`, `firewall`, `bans`, `filters`,
`antivirus`, `junk`, `quarantine`, `web`, `mtasts`) with its default and a `doc`;
`reference.reference_markdown()` renders them all into `docs/config.md`, so defaults live in one
place. `load()` reports the first
problem as a `ConfigError` naming the dotted key path (e.g. `smtp.max_recipients: expected an
integer`); unknown keys are errors too, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postkeep.config.bans import BansConfig, ClusterConfig, validate_bans
from postkeep.config.delivery import DeliveryConfig, validate_delivery
from postkeep.config.dkim import DkimConfig, validate_dkim
from postkeep.config.dns import DnsConfig, parse_nameserver, validate_dns
from postkeep.config.fields import KiB, MiB, parse_listen
from postkeep.config.filters import (
    AntivirusConfig,
    FiltersConfig,
    MilterConfig,
    QuarantineConfig,
    validate_filters,
)
from postkeep.config.firewall import FirewallConfig, validate_firewall
from postkeep.config.imap import ImapConfig
from postkeep.config.inbound import DnsListConfig, InboundConfig, validate_inbound
from postkeep.config.junk import JunkConfig, validate_junk
from postkeep.config.mtasts import MtaStsConfig, validate_mta_sts
from postkeep.config.sections import LogConfig, ServerConfig, StoreConfig, TlsCertificate, TlsConfig
from postkeep.config.sending import SendingConfig, validate_sending
from postkeep.config.smtp import DEFAULT_SASL, SmtpConfig, SubmissionConfig
from postkeep.config.web import WebConfig, validate_web
from postkeep.errors import ConfigError

__all__ = [
    "AntivirusConfig", "BansConfig", "ClusterConfig", "Config", "DeliveryConfig", "DkimConfig",
    "DnsConfig", "DnsListConfig", "FiltersConfig", "FirewallConfig", "ImapConfig",
    "InboundConfig", "JunkConfig", "KiB", "LogConfig", "MiB", "MilterConfig", "MtaStsConfig",
    "QuarantineConfig",
    "SendingConfig", "ServerConfig", "SmtpConfig", "StoreConfig", "SubmissionConfig",
    "TlsCertificate", "TlsConfig", "WebConfig", "load", "parse_listen", "parse_nameserver",
]


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    sending: SendingConfig = field(default_factory=SendingConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    inbound: InboundConfig = field(default_factory=InboundConfig)
    firewall: FirewallConfig = field(default_factory=FirewallConfig)
    bans: BansConfig = field(default_factory=BansConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    antivirus: AntivirusConfig = field(default_factory=AntivirusConfig)
    junk: JunkConfig = field(default_factory=JunkConfig)
    quarantine: QuarantineConfig = field(default_factory=QuarantineConfig)
    web: WebConfig = field(default_factory=WebConfig)
    mta_sts: MtaStsConfig = field(default_factory=MtaStsConfig)
    base_dir: Path = field(default=Path("."), metadata={"internal": True})
    source: Path | None = field(default=None, metadata={"internal": True})  # the file read

    def processes(self) -> int:
        """How many worker processes serve the listeners (`server.processes`, 0: one per
        core, at most 8)."""
        return self.server.processes or max(1, min(len(os.sched_getaffinity(0)), 8))

    @property
    def data_dir(self) -> Path:
        return (self.base_dir / self.server.data_dir).resolve()

    def data_path(self, relative: str) -> Path:
        """A path from the config, resolved against the data directory."""
        return (self.data_dir / relative).resolve()

    def web_hostnames(self) -> list[str]:
        """The host names the web listeners answer to (`web.hostnames`, or by default
        `server.hostname` and the names of `tls.certificates`), lower case."""
        names = self.web.hostnames or [
            self.server.hostname, *(n for c in self.tls.certificates for n in c.names)]
        return list(dict.fromkeys(n.lower().rstrip(".") for n in names))

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.data_path('store.db')}"


# -- loading ------------------------------------------------------------------------------------

_LEVELS = ("debug", "info", "warning", "error")


def _convert(path: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, "expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, "expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, "expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, "expected a string")
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(path, "expected a list")
        return [_convert(f"{path}[{i}]", v, item) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(path, "expected a table")
        return _build(hint, value, path)
    raise TypeError(f"unsupported config type {hint!r} at {path}")  # a bug, not user input


# keys of earlier releases that live elsewhere now: their error names the new place
MOVED_KEYS = {"imap.processes": "server.processes"}


def _build(cls: Any, table: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in known:
            moved = MOVED_KEYS.get(path)
            raise ConfigError(path, f"moved to {moved}" if moved else "unknown key")
        kwargs[key] = _convert(path, value, hints[key])
    return cls(**kwargs)


_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def _sni_name_problem(name: str) -> str | None:
    """Why `name` cannot be matched against an SNI host name (RFC 6066 §3), or None."""
    labels = name.lower().split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            return f"{name!r}: a wildcard needs at least two labels after '*.'"
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return f"{name!r}: SNI carries host names, not IP addresses"
    for label in labels:
        valid = 0 < len(label) < 64 and set(label) <= _HOST_CHARS
        if not valid or label.startswith("-") or label.endswith("-"):
            return (f"{name!r} is not a host name (letters, digits and '-' per label; "
                    "A-labels for IDNs; a wildcard only as the whole first label)")
    return None


def _validate_tls(cfg: Config) -> None:
    """`[tls]` checks that need no files; startup checks the files (postkeep.net.tls)."""
    for key in ("cert_file", "key_file"):
        if not getattr(cfg.tls, key):
            raise ConfigError(f"tls.{key}", "must name a PEM file")
    served_by: dict[str, str] = {}
    for i, item in enumerate(cfg.tls.certificates):
        prefix = f"tls.certificates[{i}]"
        if not item.names:
            raise ConfigError(f"{prefix}.names", "must list at least one host name")
        for j, name in enumerate(item.names):
            problem = _sni_name_problem(name)
            if problem:
                raise ConfigError(f"{prefix}.names[{j}]", problem)
            if name.lower() in served_by:
                raise ConfigError(f"{prefix}.names[{j}]",
                                  f"{name} is already served by {served_by[name.lower()]}")
            served_by[name.lower()] = prefix
        for key in ("cert_file", "key_file"):
            if not getattr(item, key):
                raise ConfigError(f"{prefix}.{key}", "must name a PEM file")
    if not 0 < cfg.tls.handshake_timeout <= 300:
        raise ConfigError("tls.handshake_timeout", "must be greater than 0 and at most 300")


def _validate(cfg: Config) -> None:
    if cfg.log.level not in _LEVELS:
        raise ConfigError("log.level", f"must be one of {', '.join(_LEVELS)}")
    if not cfg.server.hostname or " " in cfg.server.hostname:
        raise ConfigError("server.hostname", "must be a host name")
    _validate_tls(cfg)
    validate_dns(cfg.dns)
    validate_delivery(cfg.delivery)
    validate_sending(cfg.sending)
    validate_dkim(cfg.dkim)
    validate_inbound(cfg.inbound)
    validate_firewall(cfg.firewall)
    validate_bans(cfg.bans, cfg.cluster)
    validate_filters(cfg.filters, cfg.antivirus, cfg.quarantine)
    validate_junk(cfg.junk)
    for i, item in enumerate(cfg.smtp.listen):
        try:
            parse_listen(item)
        except ValueError as e:
            raise ConfigError(f"smtp.listen[{i}]", str(e)) from None
    known = {*DEFAULT_SASL, "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "DIGEST-MD5", "GSSAPI"}
    for section, part in (("submission", cfg.submission), ("imap", cfg.imap)):
        for key in ("listen", "tls_listen"):
            for i, item in enumerate(getattr(part, key)):
                try:
                    parse_listen(item)
                except ValueError as e:
                    raise ConfigError(f"{section}.{key}[{i}]", str(e)) from None
        for i, mech in enumerate(part.sasl_mechanisms):
            if mech not in known:
                raise ConfigError(
                    f"{section}.sasl_mechanisms[{i}]",
                    f"unknown mechanism {mech!r} (known: {', '.join(sorted(known))})",
                )
        if part.gssapi_keytab:
            keytab = cfg.data_path(part.gssapi_keytab)
            try:
                found = keytab.is_file()
            except OSError as e:  # a directory on the way this user may not search
                raise ConfigError(f"{section}.gssapi_keytab",
                                  f"cannot reach {keytab}: {e.strerror}") from None
            if not found:
                raise ConfigError(f"{section}.gssapi_keytab", f"no such file: {keytab}")
    imap = cfg.imap
    for key in ("max_append_size", "max_connections", "max_connections_per_ip",
                "max_connections_per_account", "login_timeout", "command_timeout",
                "min_data_rate", "slow_after", "command_rate", "max_search_keys",
                "max_search_work", "max_search_content"):
        if getattr(imap, key) <= 0:
            raise ConfigError(f"imap.{key}", "must be greater than 0")
    for section, share in (("imap", imap.slow_share), ("smtp", cfg.smtp.slow_share)):
        if not 0 < share <= 1:
            raise ConfigError(f"{section}.slow_share", "must be greater than 0 and at most 1")
    if not 0 <= cfg.server.processes <= 64:
        raise ConfigError("server.processes", "must be 0 (one per CPU core) to 64")
    if imap.idle_timeout < 1800:
        raise ConfigError("imap.idle_timeout", "must be at least 1800 (RFC 9051 §5.4)")
    if not 0 <= imap.message_cache_size <= 1 << 34:
        raise ConfigError("imap.message_cache_size", "must be 0 (off) to 16 GiB")
    if imap.max_append_size > 1 << 30:
        raise ConfigError("imap.max_append_size", "must be at most 1 GiB")
    if imap.max_append_in_flight < imap.max_append_size:
        raise ConfigError("imap.max_append_in_flight", "must be at least max_append_size")
    sub = cfg.submission
    if sub.max_recipients < 1 or sub.max_message_size <= 0 or sub.max_header_size <= 0:
        raise ConfigError("submission", "message limits must be greater than 0")
    if sub.max_part_size <= 0:
        raise ConfigError("submission.max_part_size", "must be greater than 0")
    smtp = cfg.smtp
    positive = {
        "max_message_size": smtp.max_message_size,
        "max_header_size": smtp.max_header_size,
        "max_received_headers": smtp.max_received_headers,
        "max_connections": smtp.max_connections,
        "max_connections_per_ip": smtp.max_connections_per_ip,
        "hard_error_limit": smtp.hard_error_limit,
        "command_timeout": smtp.command_timeout,
        "data_timeout": smtp.data_timeout,
        "min_data_rate": smtp.min_data_rate,
        "slow_after": smtp.slow_after,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"smtp.{key}", "must be greater than 0")
    if smtp.max_recipients < 100:
        raise ConfigError("smtp.max_recipients", "must be at least 100 (RFC 5321 §4.5.3.1.8)")
    if smtp.max_command_line < 512:
        raise ConfigError("smtp.max_command_line", "must be at least 512 (RFC 5321 §4.5.3.1.4)")
    if smtp.max_line_length < 1000:
        raise ConfigError("smtp.max_line_length", "must be at least 1000 (RFC 5321 §4.5.3.1.6)")
    if smtp.error_delay < 0 or smtp.soft_error_limit < 0:
        raise ConfigError("smtp.error_delay", "must not be negative")
    if smtp.spool_threshold < 0:
        raise ConfigError("smtp.spool_threshold", "must not be negative")
    if smtp.max_data_in_flight < max(smtp.spool_threshold, 64 * KiB):
        raise ConfigError("smtp.max_data_in_flight", "must be at least spool_threshold and 64 KiB")
    validate_web(cfg.web)  # after the mail listeners: the file's order
    validate_mta_sts(cfg.mta_sts)


def load(path: Path) -> Config:
    """Read and validate a config file; raise ConfigError on any problem."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError("", f"cannot read {path}: {e.strerror}") from None
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("", f"{path} is not UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{path} is not valid TOML: {e}") from None
    cfg = _build(Config, table, "")
    base_dir = path.parent.resolve()
    cfg = dataclasses.replace(cfg, base_dir=base_dir, source=base_dir / path.name)
    _validate(cfg)
    return cfg


# -- reference documentation --------------------------------------------------------------------

