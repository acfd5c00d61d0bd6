"""The one error every sandbox backend raises when it cannot run here."""


class SandboxUnavailable(Exception):
    """The requested backend cannot run on this machine; the message says what to install."""
