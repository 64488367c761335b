"""Small statistics helpers used by the AgentOS code-repair demo.

median() has a bug on purpose: for an even number of values it returns the upper middle value
instead of the mean of the two middle values. The demo's agents find and fix it.
"""


def mean(values):
    """Arithmetic mean of a non-empty sequence."""
    if not values:
        raise ValueError("mean() of an empty sequence")
    return sum(values) / len(values)


def median(values):
    """Median of a non-empty sequence."""
    if not values:
        raise ValueError("median() of an empty sequence")
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle]


def spread(values):
    """Difference between the largest and the smallest value."""
    if not values:
        raise ValueError("spread() of an empty sequence")
    return max(values) - min(values)
