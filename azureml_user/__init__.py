"""Compatibility shim so Azure ML entry scripts run unchanged."""
