"""Interruption notices: each source turns its raw input (an SQS message body, a Node, a Pod) into the
same typed, frozen :class:`~controller.sources.interruptions.notices.InterruptionNotice` at the edge."""

__all__: list[str] = []
