"""Watching the bot: the monitor, history, doctor and cron helpers.

Private: import the public API from ``botopt.core``."""
