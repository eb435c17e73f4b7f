"""kernel/res_counter.c of 3.3, with patch 07/10's underflow clamp."""
import errno

from .config import RESOURCE_MAX
from .errors import EngineError


class ResCounter:
    __slots__ = ("usage", "max_usage", "limit", "soft_limit", "failcnt", "parent", "owner")

    def __init__(self, parent=None, owner=None):
        self.usage = 0
        self.max_usage = 0
        self.limit = RESOURCE_MAX
        self.soft_limit = RESOURCE_MAX
        self.failcnt = 0
        self.parent = parent
        self.owner = owner  # the Memcg this counter belongs to

    def chain(self):
        c = self
        while c is not None:
            yield c
            c = c.parent

    def charge(self, val: int):
        """All-or-nothing charge up the chain. Returns None, or the counter that refused."""
        c = self
        while c is not None:
            new = c.usage + val
            if new > c.limit:
                c.failcnt += 1
                u = self
                while u is not c:
                    u.usage -= val
                    u = u.parent
                return c
            c.usage = new
            if new > c.max_usage:
                c.max_usage = new
            c = c.parent
        return None

    def charge_nofail(self, val: int) -> None:
        for c in self.chain():
            c.usage += val
            if c.usage > c.max_usage:
                c.max_usage = c.usage

    def uncharge(self, val: int) -> list:
        """Uncharge up the chain, each level clamped at 0. Returns the counters that underflowed."""
        under = []
        c = self
        while c is not None:
            if c.usage < val:
                under.append((c, val - c.usage))
                c.usage = 0
            else:
                c.usage -= val
            c = c.parent
        return under

    def set_limit(self, val: int) -> None:
        if self.usage > val:
            raise EngineError(errno.EBUSY, f"usage {self.usage} exceeds the new limit {val}")
        self.limit = val

    def margin(self) -> int:
        return self.limit - self.usage if self.limit > self.usage else 0

    def reset_max(self) -> None:
        self.max_usage = self.usage
