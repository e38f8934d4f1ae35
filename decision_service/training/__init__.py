"""Training the underwriting model (needs the `train` extra; the service never imports this)."""
