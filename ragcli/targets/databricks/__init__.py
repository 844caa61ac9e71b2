"""The Databricks Vector Search target (Direct Vector Access): `target.DatabricksTarget` over the client
library, with ragcli's retries and error mapping in `client`, credentials in `credentials` and the row
layout in `rows`. Needs the `databricks` extra; nothing here is imported until the target is used."""
