"""The base layer: model access, response formats, the template spec, statistics and the store.

Everything above builds on it (papers/, reviewer/, the agent loop in scientist/); it imports
nothing of theirs. docs/architecture.md draws the layers.
"""
