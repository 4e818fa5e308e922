"""Reading load from a real Prometheus: values, "no data" and failures."""
