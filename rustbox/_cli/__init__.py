"""The ``rustbox`` command line."""
