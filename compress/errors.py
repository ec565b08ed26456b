"""The one exception type the CLI turns into a one-line message and exit code 2."""


class CompressError(Exception):
    """A problem the user can fix (bad path, unknown name, missing file).

    The message must say what to do; the CLI prints it without a traceback unless --debug.
    """
