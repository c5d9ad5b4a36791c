"""Efficiency measurement: time to first token, decode throughput, latency, peak memory."""
