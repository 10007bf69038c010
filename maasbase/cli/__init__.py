"""The ``maas-base`` command line."""
