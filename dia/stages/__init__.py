"""One entry point per workflow rule: read inputs, call the algorithms, write outputs + meta.

Each ``run_*`` function takes explicit paths and the config layers the rule passed as params, so
it can be called from a Snakemake script, a notebook or a test alike.
"""
