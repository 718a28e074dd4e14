"""Implementation of the rules generator; the public names live in `synthloop.generate.rules`."""
