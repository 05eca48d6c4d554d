"""One thin module per CLI command: ``add_arguments(parser)`` and ``run(args) -> int``.

Each module imports its library code inside ``run()``-level helpers where it is heavy, so that
``ncrobust --help`` and a command's ``--help`` stay fast.
"""
