"""Support code for the tests and the benchmarks (`bench/` imports it too): servers the suites
start, the Stripe stand-in and factories, the one waiting helper, and what two suites share."""
