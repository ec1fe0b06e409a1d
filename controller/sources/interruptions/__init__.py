"""Interruption notices: each source turns its raw input (an SQS message body, a Node, a Pod) into the
same typed, frozen :class:`~controller.core.notices.InterruptionNotice` at the edge."""

__all__: list[str] = []
