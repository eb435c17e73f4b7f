import os
import shutil

import pytest

from mounting import Mount

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def mount_factory(tmp_path):
    """mount_factory(options=(), slabinfo=None) -> a mounted Mount; unmounted at teardown,
    also when the test fails."""
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        pytest.skip("FUSE is not available")
    mounts = []

    def make(options=(), slabinfo=None, name="mnt"):
        m = Mount(tmp_path / name, options, slabinfo)
        mounts.append(m)
        return m.start()
    yield make
    for m in mounts:
        m.stop()


@pytest.fixture
def mnt(mount_factory):
    return mount_factory()


@pytest.fixture
def mounts():
    """A list a test appends Mounts it started itself to; each is stopped at teardown."""
    made = []
    yield made
    for m in made:
        m.stop()
