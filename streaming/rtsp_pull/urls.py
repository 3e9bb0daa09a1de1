"""Camera URLs as names: which stream names are rtsp:// URLs, and how to show one without its password."""

from __future__ import annotations

from media.rtsp_client import RtspUrlError, parse_rtsp_url


def is_rtsp_url(name: str) -> bool:
    return isinstance(name, str) and name[:7].lower() == "rtsp://"


def masked(text: str) -> str:
    """An rtsp:// URL with its password replaced by ***, for listings and logs."""
    try:
        url = parse_rtsp_url(text)
    except RtspUrlError:
        return text[:128]
    if url.password is None:
        return text
    scheme, _, rest = text.partition("://")
    userinfo, _, tail = rest.partition("@")
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{tail}"
