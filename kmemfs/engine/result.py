"""What an allocation or charge request reports, and the charge path's outcomes."""
from dataclasses import dataclass

# Charge-path outcomes (3.3 CHARGE_* plus the series' bypass).
OK, RETRY, WOULDBLOCK, NOMEM, OOM_DIE, WAIT, NOVICTIM = range(7)


@dataclass
class Result:
    """Outcome of an allocation or charge request."""
    wanted: int
    done: int = 0
    status: str = "ok"            # ok | nomem | wait | killed
    cache: object = None          # the KmemCache objects were taken from
    wait_on: object = None        # status == "wait": the Memcg under OOM

    @property
    def ok(self) -> bool:
        return self.status == "ok"
