"""The defaults PROTOCOL.md names, pinned: each would otherwise drift unnoticed, since
the tests that exercise a rule mostly shrink its number to run fast."""

from __future__ import annotations

import exec_runtime
from exec_runtime import ServerConfig
from exec_runtime._cli.main import _build_parser, serve_options
from exec_runtime._client.client import RECOVERY_DEADLINE, RETRY_INTERVAL
from exec_runtime._client.process import ProcessStream
from exec_runtime._core.reorder import DEFAULT_MAX_PENDING_BYTES, DEFAULT_MAX_PENDING_EVENTS
from exec_runtime._core.write_ids import DEFAULT_WRITE_ID_CAPACITY
from exec_runtime._daemon.fs_service import MAX_BLOCK_LEN, MAX_DIRECTORY_ENTRIES

MiB = 1 << 20


def test_the_daemon_defaults_are_the_protocols() -> None:
    config = ServerConfig()
    assert config.max_message_bytes == 64 * MiB  # §1
    assert config.max_json_values == 262_144  # §1
    assert config.ping_interval == 30.0  # §1
    assert config.detached_ttl == 30.0  # §3
    assert (config.retain_bytes, config.retain_chunks) == (MiB, 50_000)  # §6
    assert config.closed_ttl == 30.0  # §6
    assert DEFAULT_WRITE_ID_CAPACITY == 4_096  # §4 process/write
    assert MAX_DIRECTORY_ENTRIES == 50_000  # §8 fs/readDirectory
    assert MiB == MAX_BLOCK_LEN  # §8 fs/readBlock


def test_the_client_defaults_are_the_protocols() -> None:
    assert (RECOVERY_DEADLINE, RETRY_INTERVAL) == (25.0, 0.1)  # §9 recover
    assert (256, MiB) == (DEFAULT_MAX_PENDING_EVENTS, DEFAULT_MAX_PENDING_BYTES)  # §9 reorder
    reorder = ProcessStream("p").reorder  # what each process actually gets
    assert (reorder._max_pending_events, reorder._max_pending_bytes) == (256, MiB)


def test_serve_without_flags_is_the_default_config() -> None:
    """``serve`` with no flag, no file and no variable runs ServerConfig's defaults."""
    options = serve_options(_build_parser().parse_args(["serve"]), {})
    assert options.config == ServerConfig()
    assert (options.log_level, options.log_format) == ("INFO", "text")


def test_open_client_uses_the_protocols_recovery_deadline() -> None:
    import inspect

    for opener in (exec_runtime.open_client,):
        default = inspect.signature(opener).parameters["recovery_deadline"].default
        assert default == RECOVERY_DEADLINE
