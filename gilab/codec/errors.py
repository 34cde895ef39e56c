"""The codec's own error: a compressed file that is damaged, truncated, of another kind or of a newer version."""

from ..errors import FileFormatError


class BitstreamError(FileFormatError):
    """A ``.gic`` file gilab cannot decode; the message is one line that says why (the CLI prints it, exit 2)."""
