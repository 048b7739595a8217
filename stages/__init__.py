"""One module per pipeline stage; each exposes `run(config) -> Path`. Stages never import the CLI."""
