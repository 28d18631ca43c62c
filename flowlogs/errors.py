"""The Flow Logs exception tree.

    FlowLogsError                  every error this project raises on purpose
    ├── ConfigError                settings, a command argument or an input file are invalid
    ├── FrameError                 a packet-metadata frame cannot be decoded
    │   ├── BadMagicError          not a Flow Logs frame at all
    │   ├── UnsupportedVersionError  a frame version this build does not read
    │   └── TruncatedFrameError    the body is shorter (or longer) than its header says
    ├── BrokerError                the local Kafka broker could not be fetched or started
    └── StoreError                 the ClickHouse store failed
        └── StoreLockedError       another process owns the embedded chDB data dir

Callers catch the level they mean: the worker catches ``FrameError`` per frame and keeps
going; the CLI catches ``FlowLogsError`` and prints its message without a traceback.
"""

from __future__ import annotations


class FlowLogsError(Exception):
    """Base of every error Flow Logs raises deliberately; its message is for an operator."""


class ConfigError(FlowLogsError):
    """A setting, command argument or input file is invalid."""


class FrameError(FlowLogsError):
    """A packet-metadata frame cannot be decoded; ``reason`` is a short machine-readable tag."""

    reason = "invalid"


class BadMagicError(FrameError):
    reason = "bad_magic"


class UnsupportedVersionError(FrameError):
    reason = "unsupported_version"


class TruncatedFrameError(FrameError):
    reason = "truncated"


class BrokerError(FlowLogsError):
    """The local broker could not be prepared, started or reached."""


class StoreError(FlowLogsError):
    """The ClickHouse store could not be opened or written."""


class StoreLockedError(StoreError):
    """Another live process owns the embedded chDB data directory."""


def interrupt(*_: object) -> None:
    """Signal handler that stops a command the way Ctrl-C does (its cleanup runs)."""
    raise KeyboardInterrupt
