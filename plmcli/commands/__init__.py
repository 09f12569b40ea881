"""One module per command: check option combinations, build the config, call the engine, print."""
