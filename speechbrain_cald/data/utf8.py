"""Reading corpus text as strict UTF-8, with errors that name the file, line and column.

``open(path, encoding="utf-8")`` raises ``UnicodeDecodeError: 'utf-8' codec can't
decode byte 0xe9 in position 8191`` for a Latin-1 line of a GLUE or IMDB file:
a position in some read buffer, no file, no line. Every text corpus reader
(GLUE, IMDB, the Pile) decodes through :func:`decode_utf8`, which says where
the bytes are and what to do. GLUE, IMDB and the Pile are distributed as UTF-8:
such a byte means the copy was re-encoded on its way.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Iterator, Tuple, Type, Union

__all__ = ["TextEncodingError", "decode_utf8", "read_utf8", "utf8_lines"]


class TextEncodingError(ValueError):
    """Text that is not UTF-8 (the message names file, line and column)."""


def decode_utf8(
    raw: bytes,
    path: Union[str, os.PathLike],
    line: int = 1,
    error: Type[ValueError] = TextEncodingError,
    encoding: str = "utf-8",
) -> str:
    """``raw`` decoded as strict UTF-8, or ``error`` naming ``path``, the line and the column.

    Arguments
    ---------
    raw : bytes
        One line, or a whole file (lines are then counted inside it).
    path : path-like
        The file, for the error.
    line : int
        The line ``raw`` starts on.
    error : type
        The exception class to raise (a reader's own format error).
    encoding : str
        ``"utf-8"``, or ``"utf-8-sig"`` for a first line that may start with a byte-order mark.

    Returns
    -------
    str

    Example
    -------
    >>> decode_utf8("café".encode(), "x.tsv")
    'café'
    >>> decode_utf8(b"ok\\nna\\xefve", "x.tsv", line=3)
    Traceback (most recent call last):
    ...
    speechbrain_cald.data.utf8.TextEncodingError: x.tsv:4: not valid UTF-8: byte 0xef at column 3 (invalid continuation byte) in 'na\\\\xefve'; the corpus is distributed as UTF-8, so this copy was re-encoded: convert it back (e.g. `iconv -f latin1 -t utf-8`) or fetch it again
    """
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        start = raw.rfind(b"\n", 0, err.start) + 1
        end = raw.find(b"\n", err.start)
        text = raw[start : end if end >= 0 else len(raw)].rstrip(b"\r")
        shown = text[:80].decode("utf-8", "backslashreplace")
        line += raw.count(b"\n", 0, err.start)
        raise error(
            f"{path}:{line}: not valid UTF-8: byte 0x{raw[err.start]:02x} at column "
            f"{err.start - start + 1} ({err.reason}) in {shown!r}; the corpus is distributed as UTF-8, so this copy "
            "was re-encoded: convert it back (e.g. `iconv -f latin1 -t utf-8`) or fetch it again"
        ) from None


def utf8_lines(
    source: Union[str, os.PathLike, BinaryIO], path: Union[str, os.PathLike, None] = None,
    error: Type[ValueError] = TextEncodingError, byte_order_mark: bool = False,
) -> Iterator[Tuple[int, str]]:
    """``(line number, line)`` of a file (or a binary stream), each line decoded strictly, endings kept.

    Arguments
    ---------
    source : path-like or binary stream
        The file, or an open binary stream of it (e.g. decompressed).
    path : path-like, optional
        The file's name for errors (default: ``source``).
    error : type
        The exception class of a decoding error.
    byte_order_mark : bool
        Drop a UTF-8 byte-order mark before the first line (MRPC's header has one).

    Example
    -------
    >>> import io
    >>> list(utf8_lines(io.BytesIO(b"\\xef\\xbb\\xbfa\\tb\\r\\nc\\n"), "t.tsv", byte_order_mark=True))
    [(1, 'a\\tb\\r\\n'), (2, 'c\\n')]
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            yield from utf8_lines(f, source if path is None else path, error, byte_order_mark)
        return
    for number, raw in enumerate(source, start=1):
        encoding = "utf-8-sig" if byte_order_mark and number == 1 else "utf-8"
        yield number, decode_utf8(raw, path, number, error, encoding)


def read_utf8(path: Union[str, os.PathLike], error: Type[ValueError] = TextEncodingError) -> str:
    """The whole file as strict UTF-8 (one IMDB review), a decoding error naming its line and column."""
    with open(path, "rb") as f:
        return decode_utf8(f.read(), path, 1, error)
