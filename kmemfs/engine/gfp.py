"""GFP flag bits of 3.3 (include/linux/gfp.h) plus the series' ___GFP_NOACCOUNT (patch 04/10)."""
import enum

from .errors import EngineError
import errno


class Gfp(enum.IntFlag):
    WAIT = 0x10
    HIGH = 0x20
    IO = 0x40
    FS = 0x80
    NOWARN = 0x200
    NOFAIL = 0x800
    NORETRY = 0x1000
    NOACCOUNT = 0x2000  # 04/10: between NORETRY 0x1000 and COMP 0x4000
    THISNODE = 0x40000


# GFP_THISNODE with CONFIG_NUMA (0 without): what SLAB's node-local grows add.
GFP_THISNODE = Gfp.THISNODE | Gfp.NOWARN | Gfp.NORETRY


GFP_NOWAIT = Gfp(0)             # GFP_ATOMIC & ~__GFP_HIGH
GFP_ATOMIC = Gfp.HIGH
GFP_NOIO = Gfp.WAIT
GFP_NOFS = Gfp.WAIT | Gfp.IO
GFP_KERNEL = Gfp.WAIT | Gfp.IO | Gfp.FS

NAMES = {
    "GFP_KERNEL": GFP_KERNEL, "GFP_NOFS": GFP_NOFS, "GFP_NOIO": GFP_NOIO,
    "GFP_ATOMIC": GFP_ATOMIC, "GFP_NOWAIT": GFP_NOWAIT,
    "__GFP_NOACCOUNT": Gfp.NOACCOUNT, "__GFP_NOFAIL": Gfp.NOFAIL, "__GFP_NORETRY": Gfp.NORETRY,
}


def parse_gfp(text: str) -> Gfp:
    """`GFP_KERNEL|__GFP_NOACCOUNT` -> flags. Exactly one base mask, modifiers optional."""
    bases, mods = [], Gfp(0)
    for word in text.split("|"):
        if word not in NAMES:
            raise EngineError(errno.EINVAL, f"unknown gfp flag {word!r}")
        if word.startswith("GFP_"):
            bases.append(NAMES[word])
        else:
            mods |= NAMES[word]
    if len(bases) > 1:
        raise EngineError(errno.EINVAL, f"more than one base gfp mask in {text!r}")
    return (bases[0] if bases else GFP_KERNEL) | mods


def gfp_name(gfp: Gfp) -> str:
    base = gfp & GFP_KERNEL | (gfp & Gfp.HIGH)
    names = [n for n, v in NAMES.items() if n.startswith("GFP_") and v == base]
    parts = names[:1] or [hex(int(base))]
    parts += [n for n, v in NAMES.items() if n.startswith("__") and gfp & v]
    return "|".join(parts)
