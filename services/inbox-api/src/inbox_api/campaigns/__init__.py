"""Template campaigns: one template to many recipients, fanned out in pages to the senders."""
