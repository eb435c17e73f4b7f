"""Write parsing exactly as 3.3 does it (kernel/cgroup.c, lib/vsprintf.c, lib/cmdline.c,
kernel/res_counter.c): docs/semantics.md sections 12 and 8. All arithmetic is u64 and wraps as C
does."""
import errno

from ..engine.config import RESOURCE_MAX
from ..engine.errors import EngineError

U64 = (1 << 64) - 1
CGROUP_LOCAL_BUFFER_SIZE = 64
_SPACE = b" \t\n\v\f\r\xa0"  # the kernel's isspace() includes 0xA0 (lib/ctype.c)


def strstrip(buf: bytes) -> bytes:
    return buf.strip(_SPACE)


def simple_strtoull(s: bytes, base: int = 0):
    """lib/vsprintf.c: (value mod 2^64, index where parsing stopped). No sign handling."""
    i = 0
    if base == 0:
        if s[:1] == b"0":
            if s[1:2] in (b"x", b"X") and s[2:3] and s[2:3] in b"0123456789abcdefABCDEF":
                base, i = 16, 2
            else:
                base = 8
        else:
            base = 10
    elif base == 16 and s[:2].lower() == b"0x":
        i = 2
    val = 0
    while i < len(s):
        c = s[i]
        if 48 <= c <= 57:
            d = c - 48
        elif 97 <= c <= 102 or 65 <= c <= 70:
            d = (c | 0x20) - 87
        else:
            break
        if d >= base:
            break
        val = (val * base + d) & U64
        i += 1
    return val, i


def memparse(s: bytes):
    """lib/cmdline.c of 3.3: strtoull base 0, then one optional K/M/G suffix (no T/P/E)."""
    val, i = simple_strtoull(s, 0)
    suffix = s[i:i + 1].lower()
    shift = {b"g": 30, b"m": 20, b"k": 10}.get(suffix)
    if shift:
        val = (val << shift) & U64
        i += 1
    return val, i


def memparse_write_strategy(s: bytes, page_size: int = 4096) -> int:
    """res_counter_memparse_write_strategy: "-1" (base 10) is RESOURCE_MAX, other negatives
    EINVAL; else memparse, trailing junk EINVAL, then PAGE_ALIGN up (wrapping)."""
    if s[:1] == b"-":
        val, i = simple_strtoull(s[1:], 10)
        if val != 1 or i != len(s) - 1:
            raise EngineError(errno.EINVAL, f"only -1 may be negative, not {s.decode(errors='replace')!r}")
        return RESOURCE_MAX
    val, i = memparse(s)
    if i != len(s):
        raise EngineError(errno.EINVAL, f"trailing characters in {s.decode(errors='replace')!r}")
    return (val + page_size - 1) & ~(page_size - 1) & U64


def write_u64(buf: bytes) -> int:
    """cgroup_write_X64: 0 bytes EINVAL, >= 64 bytes E2BIG, strstrip, strtoull base 0, junk EINVAL."""
    if not buf:
        raise EngineError(errno.EINVAL, "empty write")
    if len(buf) >= CGROUP_LOCAL_BUFFER_SIZE:
        raise EngineError(errno.E2BIG, f"write of {len(buf)} bytes (limit 63)")
    s = strstrip(buf.split(b"\0", 1)[0])
    val, i = simple_strtoull(s, 0)
    if i != len(s):
        raise EngineError(errno.EINVAL, f"not a number: {s.decode(errors='replace')!r}")
    return val


def write_string(buf: bytes, max_write_len: int = CGROUP_LOCAL_BUFFER_SIZE - 1) -> bytes:
    """cgroup_write_string: nbytes >= max_write_len E2BIG; the C string ends at a NUL."""
    if len(buf) >= max_write_len:
        raise EngineError(errno.E2BIG, f"write of {len(buf)} bytes (limit {max_write_len - 1})")
    return strstrip(buf.split(b"\0", 1)[0])
