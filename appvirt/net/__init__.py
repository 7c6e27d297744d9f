"""Network rules: which addresses a program may connect to, send to, or bind."""
