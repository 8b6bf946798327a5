"""`make bench`: throughput and latency figures, printed as a table and saved under bench/results/."""
