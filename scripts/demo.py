"""The demo behind `make demo`. Filled in as capabilities land."""

print("xlm demo: nothing to run yet (the corpus and `xlm prepare` are being built).")
