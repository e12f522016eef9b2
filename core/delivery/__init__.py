"""Getting notifications out: the queue, the formatter, the Telegram client.

Private: import the public API from ``botopt.core``."""
