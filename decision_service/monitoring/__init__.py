"""Monitoring of live decisions: drift of inputs, score and outcomes against the model card."""
