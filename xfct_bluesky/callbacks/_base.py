"""What the live analysis callbacks share: never raising into the RunEngine, finding theta."""

from __future__ import annotations

import logging

from event_model import DocumentRouter

from ..quantities import theta_key

logger = logging.getLogger(__name__)


class SafeDocumentRouter(DocumentRouter):
    """A ``DocumentRouter`` that logs an exception instead of raising it into the RunEngine.

    Like ``bluesky.callbacks.core.make_class_safe``, and the exceptions are
    also kept in ``errors`` so that a script or a test can see them.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.errors: list[BaseException] = []

    def __call__(self, name, doc, validate=False):
        try:
            return super().__call__(name, doc, validate)
        except Exception as exc:  # never raise into the RunEngine
            logger.exception("%s failed on a %s document", type(self).__name__, name)
            self.errors.append(exc)
            return None


def theta_key_of(start: dict | None, data_keys: dict) -> str | None:
    """The rotation angle's data key, found as :func:`~xfct_bluesky.storage.load_tomo` finds it
    (:func:`xfct_bluesky.quantities.theta_key`); None, with a warning saying why, when there is none."""
    try:
        return theta_key(data_keys, start)
    except KeyError as err:
        logger.warning("%s", err.args[0])
        return None
