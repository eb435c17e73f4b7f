"""The cache catalogue: /proc/slabinfo 2.1 rows (spec 2.1, 5; shared/data/slabinfo)."""
import errno
from dataclasses import dataclass
from importlib import resources

from .errors import EngineError

DEFAULT = "3.4.0-rc6.slabinfo"  # the 3.x-era SLAB dump, closest to the series' base


@dataclass(frozen=True)
class CacheSpec:
    name: str
    objsize: int
    objperslab: int
    pagesperslab: int
    limit: int
    batchcount: int
    shared: int
    # Boot state as the dump recorded it.
    active_objs: int = 0
    active_slabs: int = 0
    num_slabs: int = 0


def parse(text: str, source: str = "slabinfo") -> list[CacheSpec]:
    """Parse slabinfo 2.1 text into specs, in file order (newest cache first)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("slabinfo - version: 2."):
        raise EngineError(errno.EINVAL, f"{source}: not a slabinfo 2.x file (first line {lines[:1]})")
    specs, seen = [], set()
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split()
        if len(f) != 16 or f[6:8] != [":", "tunables"] or f[11:13] != [":", "slabdata"]:
            raise EngineError(errno.EINVAL, f"{source}:{n}: not a slabinfo 2.1 row: {line!r}")
        try:
            nums = [int(x) for x in f[1:6] + f[8:11] + f[13:16]]
        except ValueError:
            raise EngineError(errno.EINVAL, f"{source}:{n}: non-numeric field in {line!r}") from None
        active, num_objs, objsize, perslab, pages, limit, batch, shared, aslabs, nslabs, _ = nums
        name = f[0]
        if objsize <= 0 or perslab <= 0 or pages <= 0 or batch <= 0:
            raise EngineError(errno.EINVAL, f"{source}:{n}: {name}: sizes and batchcount must be positive")
        if name in seen:
            raise EngineError(errno.EINVAL, f"{source}:{n}: duplicate cache {name}")
        if not (active <= num_objs == nslabs * perslab and aslabs <= nslabs):
            raise EngineError(errno.EINVAL, f"{source}:{n}: {name}: inconsistent object/slab counts")
        seen.add(name)
        specs.append(CacheSpec(name, objsize, perslab, pages, limit, batch, shared,
                               active, aslabs, nslabs))
    if not specs:
        raise EngineError(errno.EINVAL, f"{source}: no cache rows")
    return specs


def load(path=None) -> list[CacheSpec]:
    if path is None:
        text = resources.files(__package__).joinpath("data", DEFAULT).read_text()
        return parse(text, DEFAULT)
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise EngineError(e.errno or errno.EIO, f"{path}: {e.strerror}") from None
    return parse(text, str(path))
