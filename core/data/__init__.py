"""Where candles come from: local files (freqtrade's layout), Binance, the store.

Private: import the public API from ``botopt.core``."""
