"""Virtual machine state the sandbox keeps for the program: clock, names, identity."""
