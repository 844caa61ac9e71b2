"""A Unity Catalog Delta table behind a Delta Sync Vector Search index.

- `rows`: the table's columns (the same fields as a Direct Access row) and their Parquet encoding;
- `client`: the calls a Delta Sync target makes: Parquet uploads to a volume (Files API), parameterised
  statements on a SQL warehouse (Statement Execution API), creating the table and the index, triggering
  a sync and waiting for it. Every failure is a one-line `DatabricksError` with credentials masked.

Nothing heavy is imported here: `client` loads databricks-sdk and pyarrow inside its functions.
"""
