"""The maintenance tasks, one module each; ``context`` holds what they share."""
