# Test-only launcher of the BigQuery emulator (PyPI `bqemulator` 1.4), used by
# tally-testkit's `bigquery` module. Offline, bqemulator dies at start trying
# to download DuckDB's spatial extension; Tally's tables use no GEOGRAPHY, so
# that one extension is skipped. Everything else is bqemulator's own start.
import bqemulator.storage.engine as engine

engine.DuckDBEngine._load_spatial = lambda self, *args, **kwargs: None

import bqemulator.cli  # noqa: E402

bqemulator.cli.main()
