"""The URLs of file transfers: parsed once, their credentials kept apart from anything that is
printed (`str()` of a `TransferUrl` has none, and neither does `redact()` of any text)."""

from __future__ import annotations

import re
import urllib.parse

import attrs

from dcocpp.ocpp.transfer.errors import TransferError

DEFAULT_PORTS = {"ftp": 21, "ftps": 21, "http": 80, "https": 443}

# `scheme://user:password@` of anything URL-like, even one urllib cannot parse; and the
# `user:password@` that starts a URL written without its scheme.
_USERINFO = re.compile(r"(?P<scheme>(?:[A-Za-z][A-Za-z0-9+.-]*:)?//)[^/?#\s]*@")
_LEADING_USERINFO = re.compile(r"^[^/?#\s]*@")


def redact(text: str) -> str:
    """`text` with the user name and password of every URL in it removed."""
    return _LEADING_USERINFO.sub("", _USERINFO.sub(r"\g<scheme>", text))


@attrs.frozen
class TransferUrl:
    scheme: str  # ftp, ftps, http or https
    host: str  # without brackets for IPv6
    port: int  # the scheme's default where the URL has none
    explicit_port: bool
    path: str  # as in the URL (percent-encoded), "/" at least
    query: str
    username: str = attrs.field(default="", repr=False)
    password: str = attrs.field(default="", repr=False)

    @property
    def tls(self) -> bool:
        return self.scheme in ("ftps", "https")

    @property
    def netloc(self) -> str:
        """host[:port], without credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.explicit_port else host

    @property
    def public(self) -> str:
        """The URL without its credentials: what a server may see in a request line, what a
        log may show."""
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.netloc}{self.path}{query}"

    @property
    def file_path(self) -> str:
        """The path as an FTP command takes it: decoded, relative to the login directory (RFC
        1738: `ftp://host/dir/f` is `dir/f` there, `ftp://host/%2Fdir/f` is `/dir/f`)."""
        return urllib.parse.unquote(self.path[1:])

    def child(self, file_name: str) -> TransferUrl:
        """The URL of `file_name` in the directory this URL names (with or without `/`)."""
        if file_name in ("", ".", "..") or any(c in file_name for c in "/\\\r\n\0"):
            raise TransferError(f"{self}: {file_name!r} is no file name")
        path = self.path.rstrip("/") + "/" + urllib.parse.quote(file_name, safe="")
        return attrs.evolve(self, path=path)

    def __str__(self) -> str:
        return self.public


def parse(text: str) -> TransferUrl:
    """A transfer URL, `scheme://[user[:password]@]host[:port]/path`; TransferError (without
    the credentials) for anything else."""
    shown = redact(text)
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise TransferError(f"{shown}: not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        supported = ", ".join(f"{name}://" for name in DEFAULT_PORTS)
        problem = f"{scheme}:// is not supported" if scheme else "no scheme"
        raise TransferError(f"{shown}: {problem} (only {supported})")
    if not parts.hostname:
        raise TransferError(f"{shown}: no host")
    if parts.fragment:
        raise TransferError(f"{shown}: a URL of a file has no #fragment")
    url = TransferUrl(
        scheme=scheme,
        host=parts.hostname,
        port=DEFAULT_PORTS[scheme] if port is None else port,
        explicit_port=port is not None,
        path=parts.path or "/",
        query=parts.query,
        username=urllib.parse.unquote(parts.username or ""),
        password=urllib.parse.unquote(parts.password or ""),
    )
    # CR/LF would end an FTP command or an HTTP header early (and a NUL no path has).
    if any(c in urllib.parse.unquote(url.path + url.query) for c in "\r\n\0"):
        raise TransferError(f"{url}: the path holds a line break or NUL")
    return url
