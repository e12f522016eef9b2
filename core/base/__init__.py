"""The foundation every layer stands on: configuration, vocabularies, codecs, files.

Private: import the public API from ``botopt.core``."""
