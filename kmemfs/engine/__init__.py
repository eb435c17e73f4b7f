"""The kmem accounting model: pure, synchronous, deterministic. No FUSE, no trio."""
from .catalogue import CacheSpec, load as load_catalogue, parse as parse_catalogue
from .check import check
from .config import RESOURCE_MAX, Config
from .core import Engine
from .result import Result
from .errors import EngineError
from .gfp import GFP_ATOMIC, GFP_KERNEL, GFP_NOFS, GFP_NOIO, GFP_NOWAIT, Gfp, parse_gfp
from .memcg import Memcg, Task

__all__ = ["CacheSpec", "Config", "Engine", "EngineError", "Gfp", "GFP_ATOMIC", "GFP_KERNEL",
           "GFP_NOFS", "GFP_NOIO", "GFP_NOWAIT", "Memcg", "RESOURCE_MAX", "Result", "Task",
           "check", "load_catalogue", "parse_catalogue", "parse_gfp"]
