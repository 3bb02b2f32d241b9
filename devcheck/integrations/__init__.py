"""Where devcheck plugs into other tools: the pytest plugin and the IPython extension."""
