"""`make bench`: throughput and latency figures, as a table and as JSON in bench/results/."""
