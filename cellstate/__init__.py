"""cellsched.cellstate: the cell's shared state and the rules every scheduler obeys."""
