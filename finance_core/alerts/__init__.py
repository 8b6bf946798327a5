"""Alerts (SPEC 12): rules over the store, each change sent once through Apprise, and kept."""
