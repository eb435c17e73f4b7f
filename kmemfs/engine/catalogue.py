"""The cache catalogue: /proc/slabinfo 2.1 rows (3.3.8 mm/slab.c s_show; shared/data/slabinfo),
and the geometry rules of 3.3's mm/slab.c on x86_64 that a row does not show: where the slab
descriptor lives (CFLGS_OFF_SLAB), and for a SLUB row the geometry and tunables SLAB would pick."""
import errno
import re
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
    # A SLUB row (`tunables 0 0 0`): geometry derived, tunables picked at kmem_cache_create.
    derived: bool = False


# x86_64 sizes in 3.3's mm/slab.c: sizeof(struct slab) (a list_head, colouroff, s_mem, inuse,
# free, nodeid: 42 bytes padded to 48), sizeof(kmem_bufctl_t) (unsigned int), cache_line_size().
SLAB_DESC = 48
BUFCTL = 4
CACHE_LINE = 64
BYTES_PER_WORD = 8
SLAB_MAX_ORDER = 1          # SLAB_MAX_ORDER_HI: kmem_cache_init, more than 32 MB of RAM
KMALLOC_MAX_ORDER = 10


def slab_mgmt_size(nr_objs: int, align: int) -> int:
    return -(-(SLAB_DESC + nr_objs * BUFCTL) // align) * align


def cache_estimate(order: int, size: int, align: int, off: bool, page: int):
    """mm/slab.c cache_estimate: (objects per slab, left-over bytes)."""
    slab = page << order
    if off:
        return slab // size, slab - slab // size * size
    n = (slab - SLAB_DESC) // (size + BUFCTL)
    if slab_mgmt_size(n, align) + n * size > slab:
        n -= 1
    return n, slab - n * size - slab_mgmt_size(n, align)


def calculate_slab_order(size: int, align: int, off: bool, page: int):
    """mm/slab.c calculate_slab_order (no SLAB_RECLAIM_ACCOUNT: a row does not say):
    (num, gfporder, left_over)."""
    num = order = left = 0
    for g in range(KMALLOC_MAX_ORDER + 1):
        n, rem = cache_estimate(g, size, align, off, page)
        if not n:
            continue
        if off and n > (size - SLAB_DESC) // BUFCTL:
            break
        num, order, left = n, g, rem
        if g >= SLAB_MAX_ORDER or left * 8 <= (page << g):
            break
    return num, order, left


def align_of(size: int) -> int:
    """The alignment a row implies: a row gives no flags, so take the largest power of two up
    to cache_line_size() dividing the size (what SLAB_HWCACHE_ALIGN gives the size-N caches)."""
    a = CACHE_LINE
    while size % a:
        a //= 2
    return max(a, BYTES_PER_WORD)


def off_slab(name: str, size: int, num: int, pages: int, page: int = 4096):
    """kmem_cache_create's CFLGS_OFF_SLAB for a cache of this geometry: (off, slab_size).
    Off-slab when size >= PAGE_SIZE/8, except `kmem_cache` (cache_cache, set up on-slab by
    kmem_cache_init; the early size-N caches are all below PAGE_SIZE/8), and moved back on-slab
    when the left-over bytes hold the aligned descriptor. The test is on the size before
    ALIGN(size, align): a row whose objperslab is the on-slab estimate and not the off-slab
    one was below PAGE_SIZE/8 before alignment (skbuff_fclone_cache, 512: 7 per slab)."""
    if size < page // 8 or name == "kmem_cache":
        return False, 0
    order = max(pages.bit_length() - 1, 0)
    align = align_of(size)
    on_num = cache_estimate(order, size, align, False, page)[0]
    off_num = cache_estimate(order, size, align, True, page)[0]
    if num == on_num != off_num:
        return False, 0
    left = (page << order) - num * size
    if left >= slab_mgmt_size(num, align):
        return False, 0
    return True, num * BUFCTL + SLAB_DESC


def enable_cpucache(size: int, nr_cpus: int, page: int = 4096):
    """mm/slab.c enable_cpucache: (limit, batchcount, shared) from the object size."""
    if size > 131072:
        limit = 1
    elif size > page:
        limit = 8
    elif size > 1024:
        limit = 24
    elif size > 256:
        limit = 54
    else:
        limit = 120
    shared = 8 if size <= page and nr_cpus > 1 else 0
    return limit, (limit + 1) // 2, shared


def slab_geometry(objsize: int, page: int = 4096):
    """What 3.3's kmem_cache_create makes of an object size: (buffer_size, num, pages)."""
    size = -(-objsize // BYTES_PER_WORD) * BYTES_PER_WORD
    align = align_of(size)
    size = -(-size // align) * align
    off = size >= page // 8
    num, order, left = calculate_slab_order(size, align, off, page)
    return size, num, 1 << order


_GENERAL = re.compile(r"(size|kmalloc)-\d+k?$")


def is_general(name: str) -> bool:
    """A kmalloc cache (malloc_sizes): SLAB's `size-N`, or SLUB's `kmalloc-N` / `kmalloc-Nk`."""
    return bool(_GENERAL.match(name))


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
        if limit == batch == shared == 0 and objsize > 0:
            spec = _slub_row(name, active, objsize)
            if name in seen:
                raise EngineError(errno.EINVAL, f"{source}:{n}: duplicate cache {name}")
            if active > num_objs:
                raise EngineError(errno.EINVAL, f"{source}:{n}: {name}: inconsistent object counts")
            seen.add(name)
            specs.append(spec)
            continue
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


def _slub_row(name: str, active: int, objsize: int) -> CacheSpec:
    """A SLUB row (tunables 0 0 0): the geometry SLAB would use for its object size; its
    active objects over as many SLAB slabs as they need (SLUB's slab counts mean nothing to
    SLAB), spread as any row's."""
    size, num, pages = slab_geometry(objsize)
    nslabs = -(-active // num)
    return CacheSpec(name, size, num, pages, 0, 0, 0, active, nslabs, nslabs, derived=True)


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
