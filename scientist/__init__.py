"""The agent framework: CLI, templates, runs, the store and the sealed evaluation process."""
