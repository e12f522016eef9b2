"""A freqtrade strategy that trades botopt's passing signals.

Copy this file into user_data/strategies/ and run freqtrade with --strategy BotoptStrategy.
botopt must be installed in freqtrade's environment (pip install botopt). See
docs/freqtrade.md for the settings it reads and what it does in each freqtrade mode.
"""

from __future__ import annotations

from freqtrade.strategy import IStrategy
from pandas import DataFrame


class BotoptStrategy(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "5m"  # must be botopt's data.interval for the pairs' files
    can_short = False  # spot: botopt's short signals need a futures config (can_short = True)
    # Exits are freqtrade's business: botopt says when to enter, not when to leave.
    minimal_roi = {"0": 0.02}
    stoploss = -0.05
    process_only_new_candles = True
    # botopt reads its own history from the data directory, so freqtrade needs no warm-up.
    startup_candle_count = 0

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        # Here, not in populate_indicators: freqtrade clears enter_tag before this call.
        from botopt.core import freqtrade_signals

        return freqtrade_signals(dataframe, metadata, self.config)

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["exit_long"] = 0
        dataframe["exit_short"] = 0
        return dataframe
