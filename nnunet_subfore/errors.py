"""Errors a user can cause and fix. The CLI prints them as one message (no traceback), exit status 2."""


class UserError(Exception):
    """Bad input or a refused action; the message names the file or setting and the fix."""
