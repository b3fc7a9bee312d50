"""Patterns as plain integers, so that torch.library custom ops (which take tensors, ints, floats, strings)
can name one. A pattern registered here stays alive for the process (patterns are small and built once per
layer); `release_pattern` drops one that is no longer used."""
import atexit
import threading

from .. import _s2attn
from .._errors import invalid

_lock = threading.Lock()
_by_key = {}  # key -> Pattern
_key_of = {}  # id(Pattern) -> key (the pattern is held in _by_key, so its id stays unique)
_next = [1]
atexit.register(_by_key.clear)  # drop the patterns before the extension module goes away


def pattern_key(pattern):
    """The integer that names `pattern` inside the custom ops (registering it on first use)."""
    if not isinstance(pattern, _s2attn.Pattern):
        raise invalid("pattern", f"an s2attn Pattern, got {type(pattern).__name__}")
    key = _key_of.get(id(pattern))  # lock-free when registered: torch.compile traces this path
    if key is not None:
        return key
    return _register(pattern)


def _register(pattern):
    with _lock:
        key = _key_of.get(id(pattern))
        if key is None:
            key = _next[0]
            _next[0] += 1
            _by_key[key] = pattern
            _key_of[id(pattern)] = key
        return key


def pattern_of(key):
    try:
        return _by_key[int(key)]
    except KeyError:
        raise invalid("pattern", f"a registered pattern key, got {key} (released?)") from None


def release_pattern(pattern):
    """Forget `pattern`; ops still referring to its key then raise InvalidArgumentError."""
    with _lock:
        key = _key_of.pop(id(pattern), None)
        if key is not None:
            _by_key.pop(key, None)
