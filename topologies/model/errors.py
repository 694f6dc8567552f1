"""The model's one error type, apart so that the plan and the topology both raise it."""


class TopologyError(ValueError):
    """The topology description is invalid; the message names the offending field."""
