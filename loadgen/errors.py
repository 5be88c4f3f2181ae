"""The one error type of the load generator: a message that names the input and the fix."""


class LoadError(Exception):
    """Bad input or an unusable target; the message is meant for the user as is."""
