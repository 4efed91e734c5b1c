"""Which database a URL names, and how to show a URL without its password.

Kept free of any driver import: `--help` and `--version` never load one (SPEC §10).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import StorageError

POSTGRES_SCHEMES = ("postgresql", "postgres")


def parse_url(url: str) -> tuple[str, str | Path]:
    """("sqlite", path) or ("postgresql", url); anything else is a StorageError."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in POSTGRES_SCHEMES:
        return "postgresql", url
    if scheme == "sqlite":
        rest = url[len("sqlite:") :]
        if not rest.startswith("///") or len(rest) <= 3:
            raise StorageError(
                f"cannot read the database URL {mask_url(url)!r}",
                "write sqlite:///relative/path.db or sqlite:////absolute/path.db",
            )
        return "sqlite", Path(unquote(rest[3:])).expanduser()
    raise StorageError(
        f"unsupported database URL {mask_url(url)!r}",
        "use postgresql://USER:PASSWORD@HOST/DB or sqlite:///path/to/runsense.db",
    )


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***: safe for errors, logs and `status`."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for some malformed URLs, like a bad IPv6 host
    except ValueError:
        return re.sub(r"//([^@/:]*):[^@/]*@", r"//\1:***@", url)
    if parts.password is None:
        return re.sub(r"(password=)[^&\s]*", r"\1***", url, flags=re.IGNORECASE)
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    masked = parts._replace(netloc=f"{user}:***@{netloc[1]}")
    return re.sub(r"(password=)[^&\s]*", r"\1***", masked.geturl(), flags=re.IGNORECASE)


def url_password(url: str, *, decoded: bool = True) -> str | None:
    """The URL's password, percent-decoded (or as written), found even in a URL that
    `urlsplit` cannot parse."""
    found = re.search(r"//[^/@:]*:([^@/]*)@", url) or re.search(
        r"password=([^&\s]*)", url, flags=re.IGNORECASE
    )
    if not found:
        return None
    return unquote(found.group(1)) if decoded else found.group(1)
