"""The data pipeline, one stage a module: `corpora` (the CSV files, checked) -> `tokens`
(tokenisation as the data options say) -> `order` (which rows each batch takes) -> `batches`
(`CorpusBatches`: padded `QaracBatch`es, an epoch at a time); `options` holds `DataConfig`."""
