"""SHA-256 and BLAKE2b without loading OpenSSL.

`import hashlib` loads OpenSSL's libcrypto (its _hashlib module): about 2 ms of every
`appvirt run`, which hashes a few kilobytes (the policy cache key, the store's base digest,
registry inode numbers). CPython's own modules give the same digests; hashlib's are the
fallback where those are missing.
"""

try:
    from _sha256 import sha256          # CPython 3.11
except ImportError:
    try:
        from _sha2 import sha256        # CPython 3.12 and later
    except ImportError:
        from hashlib import sha256
try:
    from _blake2 import blake2b         # the very one hashlib.blake2b is
except ImportError:
    from hashlib import blake2b

__all__ = ["blake2b", "sha256"]
