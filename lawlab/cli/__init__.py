"""The ``lawlab`` command line: the parser, the study commands, the law commands, packs."""
