"""`mediagate migrate`: move media from local disk into S3, verified, safe to re-run.

- `plan.py` finds the work (local media in the catalog, legacy files in a folder);
- `transfer.py` copies one file into S3, hashing it on the way;
- `service.py` fans the work out and switches each record once its copy is verified;
- `report.py` counts the outcomes for the progress bar, the logs and the summary;
- `cli.py` is the command line.
"""
