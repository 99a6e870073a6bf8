"""Email addresses, however disguised: where a raw one would travel (a request's id, a
trait, a record), Decider refuses it; emails travel only as SHA-256 hashes."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

# an address with a dotted, lettered domain: `ada@example.com`, not `lodash@4.17.21`
EMAIL = re.compile(r"[\w.+'\"-]+@[\w-]+(\.[\w-]+)*\.[^\W\d_]{2,}")
_SCALE = re.compile(r"[\w.+'\"-]+@\d+(\.\d+)?x\.")  # an image's scale: icon@2x.png


def looks_like_email(value: str) -> bool:
    """Whether `value` holds an email address, however disguised: full-width or small `@` and
    dots, invisible characters, percent-encoding. `icon@2x.png` is no address."""
    if not value.isascii():
        visible = "".join(c for c in value if unicodedata.category(c) != "Cf")
        value = unicodedata.normalize("NFKC", visible).replace("\u2024", ".")
    if "@" not in value and "%40" not in value:
        return False
    return any(not _SCALE.match(m[0]) for m in EMAIL.finditer(unquote(value)))
