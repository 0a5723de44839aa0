"""Pure-Python reference models of the C fast path (codec, FDB, offloads):
for tests, which compare them with C, and for protocol experiments.  The
product never imports them."""
