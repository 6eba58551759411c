"""Serving under MLPerf LoadGen (``convkit evaluate --scenario``) and the deployment recommendation.

One module per job; the module map is docs/layout.md. LoadGen is imported lazily: convkit evaluates without it
until a scenario is asked for.
"""
