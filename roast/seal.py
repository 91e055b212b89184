"""Sealing: the signed envelope every store keeps continuations in, and the signing keys.

An envelope is `MAGIC | format | u32 header length | header (canonical JSON) | payload (pickle) |
HMAC-SHA256 tag`, the tag over everything before it (reliability §2.2). The header binds the
payload to one place (`bind`: a session and wait, a delta, a definition), names the key that
signed it (`kid`) and records the interpreter, so `unseal` can refuse a swapped, tampered,
truncated or unportable state *before* anything is unpickled. Shared by every store.

Keys (issue 13): `ROAST_KEY` (base64 text of 32 random bytes; several, space-separated) or
`ROAST_KEY_FILE` (the same text, one key a line, mode 0600); the first key signs, every key
verifies, so a key can be rotated without stranding sessions. Without either, a store on one
machine keeps a key file beside its data (`ROAST_HOME/secret.key`, created on first use when the
store holds no sealed state); a shared store never does. Performs file I/O for keys only.
"""
from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import os
import struct
import sys
from collections.abc import Callable
TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

from roast.errors import StateRefused, StoreUnavailable, UsageError

if TYPE_CHECKING:
    from typing import Any

# Read at load time to decide whether a code-bearing continuation may be unpickled here (§2.4);
# tests monkeypatch them to fake another interpreter.
PYTHON_VERSION = ".".join(str(part) for part in sys.version_info[:3])
PYTHON_IMPL = sys.implementation.name

MAGIC = b"ROAST"
FORMAT = 2          # 1: roast 0.1 (header binds "session" and "wait_seq"); 2: a `bind` string
LEGACY_KID = "k1"   # roast 0.1's only key id: the key file in ROAST_HOME
_TAG_CONTEXT = b"roast-state-v1\x00"
_TAG_LEN = 32
_PREFIX = len(MAGIC) + 1 + 4  # magic, format byte, u32 header length
_MAX_HEADER = 64 * 1024
KEY_LEN = 32
_IMPL_NAMES = {"cpython": "CPython", "pypy": "PyPy"}
_KEY_HINT = "make one with `roast key new > roast.key && chmod 600 roast.key`, then set ROAST_KEY_FILE=roast.key"


def session_bind(session_id: str, wait_seq: int) -> str:
    """What a continuation is bound to: one session at one wait."""
    return f"session:{session_id}:wait:{wait_seq}"


# ---------------------------------------------------------------------------------------------
# Keys

class Keyring:
    """Signing keys: `keys[0]` signs, every key verifies. `source` says where they came from."""

    __slots__ = ("keys", "source")

    def __init__(self, keys: list[bytes], source: str) -> None:
        self.keys = keys
        self.source = source

    @property
    def signing(self) -> tuple[str, bytes]:
        return key_id(self.keys[0]), self.keys[0]

    def candidates(self, kid: object) -> list[bytes]:
        """The keys that may have signed an envelope with this key id."""
        if kid == LEGACY_KID:
            return list(self.keys)  # roast 0.1 wrote one id for every key: try each
        return [key for key in self.keys if key_id(key) == kid]

    def ids(self) -> list[str]:
        return [key_id(key) for key in self.keys]


def key_id(key: bytes) -> str:
    """A key's public name: the first 8 hex digits of a hash of it (never the key itself)."""
    return "k-" + hashlib.sha256(b"roast-key-id\x00" + key).hexdigest()[:8]


def new_key_text() -> str:
    """A new key as the text `ROAST_KEY_FILE` holds: base64 of 32 random bytes (`roast key new`)."""
    import base64

    return base64.b64encode(os.urandom(KEY_LEN)).decode("ascii")


def _parse_keys(text: str, where: str) -> list[bytes]:
    import base64

    keys = []
    for number, word in enumerate(text.split(), 1):
        try:
            key = base64.b64decode(word, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_LEN:
            raise StoreUnavailable(f"{where}: key {number} is not base64 text of {KEY_LEN} bytes; nothing was "
                                   "signed or loaded", hint=_KEY_HINT)
        keys.append(key)
    if not keys:
        raise StoreUnavailable(f"{where} holds no key; nothing was signed or loaded", hint=_KEY_HINT)
    return keys


def _read_key_file(path: str) -> list[bytes]:
    """A key file: base64 keys one a line (ROAST_KEY_FILE), or roast 0.1's 32 raw bytes."""
    st = os.stat(path)
    if st.st_mode & 0o077:
        raise StoreUnavailable(f"{path} is readable by others ({st.st_mode & 0o777:04o}); it was not used",
                               hint=f"run chmod 600 {path}")
    if st.st_uid != os.geteuid():
        raise StoreUnavailable(f"{path} is owned by uid {st.st_uid}, not by you; it was not used",
                               hint="the signing key must belong to the user who runs roast")
    with open(path, "rb") as handle:
        raw = handle.read(64 * 1024)
    if len(raw) == KEY_LEN and not _looks_like_text(raw):
        return [raw]
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if not text.strip():
        raise StoreUnavailable(f"{path} is not a roast signing key ({len(raw)} bytes, expected base64 text "
                               f"or {KEY_LEN} raw bytes)", hint="restore it from backup, or set ROAST_KEY_FILE")
    return _parse_keys(text, path)


def _looks_like_text(raw: bytes) -> bool:
    return all(c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n\r \t" for c in raw)


def configured_keys() -> Keyring | None:
    """The keys named by the environment (`ROAST_KEY`, `ROAST_KEY_FILE`, or roast 0.1's
    `ROAST_SECRET_KEY_FILE`), or None when none is configured."""
    text = os.environ.get("ROAST_KEY")
    if text:
        return Keyring(_parse_keys(text, "ROAST_KEY"), "ROAST_KEY")
    for variable in ("ROAST_KEY_FILE", "ROAST_SECRET_KEY_FILE"):
        path = os.environ.get(variable)
        if path:
            path = os.path.expanduser(path)
            try:
                return Keyring(_read_key_file(path), path)
            except FileNotFoundError:
                raise StoreUnavailable(f"signing key {path} (from {variable}) is missing; nothing was signed or "
                                       "loaded", hint="restore it from backup, or point "
                                                      f"{variable} at the key file") from None
            except OSError as err:
                raise StoreUnavailable(f"cannot read signing key {path} ({err.strerror}); nothing was signed "
                                       "or loaded") from err
    return None


def local_keys(path: str, *, may_create: Callable[[], bool]) -> Keyring:
    """The key file of a store on one machine. Created (0600, race-free) only when `may_create()`
    says the store holds no sealed state yet: a new key would make every saved session look
    tampered (reliability §2.3)."""
    try:
        return Keyring(_read_key_file(path), path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise StoreUnavailable(f"cannot read signing key {path} ({err.strerror}); nothing was signed or loaded") \
            from err
    if not may_create():
        raise StoreUnavailable(f"signing key {path} is missing; restore it from backup or set ROAST_KEY_FILE",
                               hint="a new key would make every saved session look tampered, so none was created")
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    # Write a private temp file, then link it into place: another process never sees a short key.
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(8).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, os.urandom(KEY_LEN))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process created it first: use theirs
    finally:
        os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return Keyring(_read_key_file(path), path)


def link_key(keys: Keyring) -> bytes:
    """The key for approval-link tokens, derived from the signing key (never the key itself)."""
    return hmac.new(keys.signing[1], b"roast-link-key-v1", hashlib.sha256).digest()


# ---------------------------------------------------------------------------------------------
# Pickling

def _has_code(payload: bytes) -> bool:
    """True if the pickle rebuilds functions or classes by value (cloudpickle reducers, CodeType)."""
    if b"cloudpickle" not in payload and b"CodeType" not in payload and b"FunctionType" not in payload:
        return False  # every global's name appears as a string at least once
    memo: dict[int, object] = {}
    recent: list[object] = []  # values pushed lately; None for anything not a string
    import pickletools  # only when sealing state that might hold code

    for op, arg, _pos in pickletools.genops(payload):
        name = op.name
        if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            recent.append(arg)
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            recent.append(memo.get(int(arg)))  # type: ignore[arg-type]
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = recent[-1] if recent else None  # type: ignore[arg-type]
        elif name in ("GLOBAL", "INST", "STACK_GLOBAL"):
            if name == "STACK_GLOBAL":
                module, qual = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
            else:
                module, _, qual = str(arg).partition(" ")
            if isinstance(module, str) and (module.startswith("cloudpickle")
                                            or (module == "types" and qual in ("CodeType", "FunctionType"))):
                return True
            recent.append(None)
        else:
            recent.append(None)
        del recent[:-4]
    return False


def dumps(state: object, who: str) -> tuple[bytes, bool]:
    """Pickle a state; return the bytes and whether they carry code. Plain data (every YAML
    workflow's) goes through the standard pickler, so neither saving nor resuming it imports
    cloudpickle (start-up, reliability §2.4); cloudpickle takes what the standard one cannot do
    portably: code, local classes, `__main__` functions."""
    import pickle

    try:
        plain: bytes | None = pickle.dumps(state, protocol=5)
    except (pickle.PicklingError, TypeError, AttributeError, ValueError, RecursionError):
        plain = None  # code, local classes...: cloudpickle below
    if plain is not None and b"__main__" not in plain:  # a script's globals would not load elsewhere
        return plain, False
    import cloudpickle

    try:
        payload = cloudpickle.dumps(state)
    except Exception as err:  # cloudpickle raises PicklingError, TypeError, AttributeError, ...
        raise UsageError(f"the state of {who} cannot be saved: {type(err).__name__}: {err}",
                         hint="keep step outputs plain data (strings, numbers, lists, dicts)") from err
    return payload, _has_code(payload)


def _cloudpickle_version(load: bool = False) -> str | None:
    """cloudpickle's version if this process uses it (None in a header: the state never needed it)."""
    module = sys.modules.get("cloudpickle")
    if module is None and load:
        import cloudpickle

        module = cloudpickle
    return getattr(module, "__version__", None)


def _major_minor(version: object) -> str:
    return ".".join(str(version).split(".")[:2])


# ---------------------------------------------------------------------------------------------
# Envelopes

def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def envelope(payload: bytes, has_code: bool, keys: Keyring, *, bind: str, now: float) -> bytes:
    """Sign pickled bytes, bound to `bind`."""
    kid, key = keys.signing
    header = _canonical({
        "v": FORMAT, "kid": kid, "bind": bind, "created": now,
        "py": PYTHON_VERSION, "impl": PYTHON_IMPL, "cloudpickle": _cloudpickle_version(),
        "payload_len": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest(), "has_code": has_code,
    })
    body = MAGIC + bytes([FORMAT]) + struct.pack(">I", len(header)) + header + payload
    return body + hmac.digest(key, _TAG_CONTEXT + body, "sha256")


def seal(state: object, keys: Keyring, *, bind: str, now: float, who: str = "a session") -> bytes:
    """Pickle `state` and sign it, bound to `bind`.

    >>> ring = Keyring([b"k" * 32], "test")
    >>> unseal(seal({"x": 1}, ring, bind="session:abcd:wait:1", now=0.0), ring, bind="session:abcd:wait:1")
    {'x': 1}
    """
    payload, has_code = dumps(state, who)
    return envelope(payload, has_code, keys, bind=bind, now=now)


def _describe_bind(bind: str) -> str:
    parts = bind.split(":")
    if parts[0] == "session" and len(parts) == 4:
        return f"session {parts[1]} at wait #{parts[3]}"
    if parts[0] == "delta" and len(parts) == 5:
        return f"step record {parts[4]} of session {parts[1]} at wait #{parts[3]}"
    if parts[0] == "definition":
        return f"workflow definition {':'.join(parts[1:])[:16]}"
    return bind


def unseal(envelope_bytes: bytes, keys: Keyring, *, bind: str, who: str | None = None) -> object:
    """Verify an envelope (lengths, HMAC, binding, versions), then unpickle it; else StateRefused.

    Nothing is unpickled unless every check passes (reliability §2.2: never `loads` on a refusal).
    """
    data = bytes(envelope_bytes)
    session = bind.split(":")[1] if bind.count(":") >= 1 else bind
    who = who or f"the state of session {session}"
    size = len(data)
    if size < len(MAGIC) + 1 or data[:len(MAGIC)] != MAGIC:
        if size < len(MAGIC) and MAGIC.startswith(data):
            raise StateRefused(f"{who} is truncated ({size:,} bytes): disk or copy damage; it was not loaded")
        raise StateRefused(f"{who} is not a roast state envelope (bad magic); it was not loaded")
    version = data[len(MAGIC)]
    if version not in (1, FORMAT):
        raise StateRefused(f"{who} was written by a newer roast (format v{version}); it was not loaded",
                           hint="upgrade roast")
    if size < _PREFIX + _TAG_LEN:
        raise StateRefused(f"{who} is truncated ({size:,} bytes): disk or copy damage; it was not loaded")
    (header_len,) = struct.unpack(">I", data[len(MAGIC) + 1:_PREFIX])
    header: dict[str, Any] | None = None
    if header_len <= _MAX_HEADER and _PREFIX + header_len <= size:
        try:
            parsed = json.loads(data[_PREFIX:_PREFIX + header_len])
        except ValueError:
            parsed = None  # unauthenticated bytes: reported as an integrity failure below
        header = parsed if isinstance(parsed, dict) else None
    if header is not None:
        payload_len = header.get("payload_len")
        if isinstance(payload_len, int) and not isinstance(payload_len, bool) and payload_len >= 0:
            expected = _PREFIX + header_len + payload_len + _TAG_LEN
            if size < expected:
                raise StateRefused(f"{who} is truncated ({size:,} of {expected:,} bytes): disk or copy "
                                   "damage; it was not loaded")
    elif header_len <= _MAX_HEADER and _PREFIX + header_len + _TAG_LEN > size:
        raise StateRefused(f"{who} is truncated ({size:,} bytes, header alone needs "
                           f"{_PREFIX + header_len + _TAG_LEN:,}): disk or copy damage; it was not loaded")
    body, tag = data[:-_TAG_LEN], data[-_TAG_LEN:]
    kid = header.get("kid") if header is not None else None
    candidates = keys.candidates(kid) if header is not None else list(keys.keys)
    good = any(hmac.compare_digest(hmac.digest(key, _TAG_CONTEXT + body, "sha256"), tag)
               for key in candidates)
    if header is not None and not candidates:
        raise StateRefused(f"{who} was signed with key {kid}, which is not among the keys configured here "
                           f"({', '.join(keys.ids())} from {keys.source}); it was not loaded",
                           hint="add the old key to ROAST_KEY_FILE (one key a line: the new one first) "
                                "so both verify")
    if not good or header is None:
        raise StateRefused(f"{who} failed its integrity check (modified outside roast?); it was not loaded",
                           hint=f"`roast cancel {session}` still works; other sessions are not affected")
    payload = body[_PREFIX + header_len:]
    if (header.get("v") != version or len(payload) != header.get("payload_len")
            or hashlib.sha256(payload).hexdigest() != header.get("payload_sha256")):
        raise StateRefused(f"{who} has an inconsistent header although it is signed; it was not loaded")
    saved_bind = header.get("bind") if version == FORMAT else \
        session_bind(str(header.get("session")), header.get("wait_seq"))  # type: ignore[arg-type]
    if saved_bind != bind:
        raise StateRefused(f"{who} holds the state of {_describe_bind(str(saved_bind))}, not of "
                           f"{_describe_bind(bind)} (copied between sessions or waits?); it was not loaded")
    saved_impl = _IMPL_NAMES.get(str(header.get("impl")), str(header.get("impl")))
    here_impl = _IMPL_NAMES.get(PYTHON_IMPL, PYTHON_IMPL)
    saved = f"{saved_impl} {header.get('py')}" + (f" / cloudpickle {header['cloudpickle']}"
                                                  if header.get("cloudpickle") else "")
    here = f"{here_impl} {PYTHON_VERSION}" + (f" / cloudpickle {_cloudpickle_version(load=True)}"
                                              if header.get("has_code") else "")
    # §2.4: code pickled by value breaks across minor versions (cloudpickle#293, #451, #505), and some
    # such loads segfault, so refuse before trying. Plain data is portable and loads anywhere.
    if header.get("has_code") and (header.get("impl") != PYTHON_IMPL
                                   or _major_minor(header.get("py")) != _major_minor(PYTHON_VERSION)):
        raise StateRefused(f"session {session} was saved by {saved}; this is {here}, and its state holds "
                           "code that cannot be loaded here; it was not loaded",
                           hint=f"resume it with {saved_impl} {_major_minor(header.get('py'))}, "
                                f"or `roast cancel {session}`")
    try:
        if not header.get("has_code"):
            import pickle  # no cloudpickle reducer in it: the standard unpickler loads it, and faster

            return pickle.loads(payload)
        import cloudpickle

        return cloudpickle.loads(payload)
    except Exception as err:  # the signature was good: version drift or a module that moved
        raise StateRefused(f"session {session} was saved by {saved}; this is {here}, and its state "
                           f"cannot be loaded here ({type(err).__name__}: {err})",
                           hint=f"resume it with {saved_impl} {_major_minor(header.get('py'))}, "
                                f"or `roast cancel {session}`") from err

