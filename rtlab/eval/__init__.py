"""The evaluation side: metrics, corpora, offline passes, replay, bench, plots."""
