"""One exception type for every user mistake the library can name.

A :class:`GlancingError` carries a single line that says what is wrong (naming the file or
setting) and how to fix it. The command line prints that line and exits with status 2 instead of
a traceback; library users can catch it like any other exception.
"""


class GlancingError(Exception):
    """A problem with the user's input or environment, described in one line with its fix."""
