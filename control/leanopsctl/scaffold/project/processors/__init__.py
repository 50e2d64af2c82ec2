"""This project's processors: one module per topic, named by `processor:` in topics.yaml."""
