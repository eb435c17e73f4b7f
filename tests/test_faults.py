"""Faults (docs/reliability.md): signals unmount, kill -9 is recovered by the next mount, an
exception in a handler is EIO for that request only, a killed sleeping writer is let go."""
import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "scripts"))
import faults  # noqa: E402  (scripts/faults.py)

pytestmark = pytest.mark.e2e


@pytest.fixture
def tmp(tmp_path):
    if not os.path.exists("/dev/fuse"):
        pytest.skip("FUSE is not available")
    return str(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts(tmp, sig):
    r = faults.signal_unmount(tmp, sig)
    print(r)                                   # the times go to the report, not into asserts
    assert r["exit_status"] == 0 and not r["still_mounted"] and r["unmounted_s"] is not None


def test_kill_9_then_mount_recovers(tmp):
    r = faults.kill9_recover(tmp)
    print(r)
    assert r["first_mount"] == 0 and r["stale_errno"] == "ENOTCONN"
    assert r["remount_status"] == 0 and r["check"] == "ok check invariants=hold"
    assert r["umount_status"] == 0 and not r["mounted_after"]


def test_exception_in_a_handler_is_eio_for_that_request_only(tmp):
    r = faults.inject_read(tmp, n=50)
    assert r["eio"] == 50 and r["other_errors"] == []
    assert r["writes_ok"] and r["listdir_ok"] and r["daemon_alive"]
    assert r["log_tracebacks"] == 50


def test_a_killed_sleeping_writer_is_let_go(tmp):
    r = faults.writer_killed(tmp)
    assert r["slept"] and r["under_oom_while_asleep"] == "1"
    assert r["under_oom_after"] == "0" and r["daemon_alive"]
    assert r["check"] == "ok check invariants=hold"
