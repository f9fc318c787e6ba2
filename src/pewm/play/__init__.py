"""``pewm play``: walk through an imagined house in the browser (one :class:`PlaySession` per tab,
served by :mod:`pewm.play.server`)."""

from pewm.play.session import ACTIONS, Frame, PlayConfig, PlaySession

__all__ = ["ACTIONS", "Frame", "PlayConfig", "PlaySession"]
