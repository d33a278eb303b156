"""The ``unbottle`` command line: one thin module per verb (parse, call the public verb, print)."""
