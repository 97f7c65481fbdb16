"""The error hierarchy: every error carries what the user needs to act on it.

Grouped under one root so callers can catch ``SyncdError`` at the edge (the CLI)
and print a clear line instead of a traceback.
"""

from __future__ import annotations

from syncd.core.scrub import scrub


class SyncdError(Exception):
    """Root of every error syncd raises on purpose.

    Its message is scrubbed of every configured secret (``syncd.core.scrub``): it may
    hold a vendor's text, and is logged, stored and shown.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(scrub(a) if isinstance(a, str) else a for a in args))


class ConfigError(SyncdError):
    """The configuration is invalid; ``problems`` lists each one with its field path."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class CheckFailed(SyncdError):
    """An online check (`syncd check --online`) found a part of the config that cannot work.

    ``settings`` names the part's own settings to fix (``apikey``; the check adds
    where the part is: ``sinks[0].apikey``); ``action`` says what to do when it is
    not a setting (start the database, open the firewall). ``reason`` never holds a
    secret (the root class scrubs it as well).
    """

    def __init__(
        self, reason: str, *, settings: tuple[str, ...] = (), action: str | None = None
    ) -> None:
        self.reason = reason = scrub(reason)
        self.settings = settings
        self.action = action
        super().__init__(reason)


class SourceError(SyncdError):
    """A source cannot be read (the file is not CSV, the database is unreachable)."""


class StoreError(SyncdError):
    """The state store cannot be opened or is locked by another process."""


class StoreLockedError(StoreError):
    """Another syncd process holds the state store's lock."""

    def __init__(self, path: str, holder: str) -> None:
        self.path = path
        self.holder = holder
        super().__init__(f"state store {path} is in use by another syncd (pid {holder})")


class ClaimLost(SyncdError):
    """Leads this replica claimed were taken over before it sent them (it froze past
    their lease, or its store could not renew it): another replica sends them now."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        super().__init__(
            f"{len(keys)} claimed lead(s) were taken over by another replica before this"
            " one sent them: not sent from here"
        )


class LeadLost(SyncdError):
    """A leader's job this process ran (a pull) is led by another replica now: this one
    froze or stalled past ``leader_ttl_s`` and the other took it over. What it was about
    to write was not written; the other replica goes on from the last commit."""

    def __init__(self, job: str) -> None:
        self.job = job
        super().__init__(
            f"another replica leads {job} now (this one was frozen or stalled past"
            " leader_ttl_s): stopped here, nothing more written"
        )


class VendorError(SyncdError):
    """A dialer answered with an error or could not be reached.

    ``vendor`` names the dialer, ``code`` is the vendor's own status code when it
    gave one, ``reason`` is its text. Never carries credentials.
    """

    # What an unauthenticated probe may show: text syncd wrote, never the dialer's words.
    public: str | None = None

    def __init__(self, reason: str, *, vendor: str = "", code: str | None = None) -> None:
        self.vendor = vendor
        self.code = code
        self.reason = reason = scrub(reason)
        # A reason built from another error of the same vendor already names it.
        prefix = f"{vendor}: " if vendor and not reason.startswith(f"{vendor}: ") else ""
        suffix = f" (code {code})" if code is not None else ""
        super().__init__(f"{prefix}{reason}{suffix}")


class RetryableError(VendorError):
    """Transient: a timeout, a reset connection, a 5xx, a 429. Try again later.

    ``retry_after`` is the delay the server asked for, in seconds, when it asked.
    """

    def __init__(
        self,
        reason: str,
        *,
        vendor: str = "",
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason, vendor=vendor, code=code)
        self.retry_after = retry_after

    @property
    def answered(self) -> bool:
        """Return True when the dialer answered that it took nothing (an HTTP status, a
        vendor's code); False when nothing says whether it stored the request: no answer
        (a timeout, a reset) or a gateway that gave up waiting for it (504)."""
        return self.code is not None and self.code != "504"


class SinkHeld(RetryableError):
    """The dialer refuses to take records *now*, for the sink as a whole; the records are fine.

    A campaign that is not running or paused, a locked account: every lead would get
    the same answer. The push loop puts the batch back without spending attempts and
    holds the sink's pushes (``retry_after`` when the vendor suggests a wait, else a
    growing backoff). ``public`` says why in syncd's words, for /readyz and status.
    """

    def __init__(
        self,
        reason: str,
        *,
        public: str,
        vendor: str = "",
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason, vendor=vendor, code=code, retry_after=retry_after)
        self.public = public


class BatchTooLarge(VendorError):
    """The dialer refused a request for its size (HTTP 413); the records may be fine.

    The push loop halves the batch, remembers the size that worked and claims at
    most that many from then on; a single record still too large is refused.
    """


class PermanentError(VendorError):
    """The vendor refused the records of this request; repeating it will not help."""


class SinkConfigError(PermanentError):
    """The vendor refused the sink itself (bad key, unknown process, bad credentials).

    The sink stops; its leads stay queued until the configuration is fixed.
    """


class SessionExpiredError(VendorError):
    """The vendor says the session or token is no longer valid; log in again."""


_PUBLIC_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (SinkConfigError, "the dialer refused the sink's settings or credentials"),
    (SessionExpiredError, "the dialer ended the session"),
    (BatchTooLarge, "the dialer refused a request as too large"),
    (RetryableError, "the dialer failed or could not be reached"),
    (PermanentError, "the dialer refused a request"),
    (VendorError, "the dialer answered with an error"),
)


def public_reason(exc: BaseException | str) -> str:
    """Return what /readyz may say about a failure: its kind and code, not the dialer's text.

    A dialer's error text can quote anything (a request it echoes, a proxy's page);
    the unauthenticated probe names the kind of failure and points at `syncd status`,
    which reads the full reason from the store.
    """
    if isinstance(exc, VendorError) and exc.public:
        return exc.public
    for kind, text in _PUBLIC_KINDS:
        if isinstance(exc, kind):
            code = getattr(exc, "code", None)
            return f"{text}, code {code}" if code else text
    if isinstance(exc, str):
        return "see syncd status"
    return f"internal error ({type(exc).__name__})"
