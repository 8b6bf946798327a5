"""The Stripe feed: events in, handlers, thin-event resolution, sync, replay, retention."""
