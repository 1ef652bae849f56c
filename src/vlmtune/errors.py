"""The one exception type the CLI turns into a one-line message (never a traceback)."""


class VlmtuneError(Exception):
    """A problem the user can fix: the message names the file/field and what to do."""
