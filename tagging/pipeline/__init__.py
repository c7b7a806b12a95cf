"""The DAG's steps, as plain functions: testable without Airflow, wired by
dags/catalogue_tagging.py (one task each), also used by the CLI and the demos.

```
harvest_labels -> retrain -> gate_and_promote -> resolve_run -> plan_shards -> tag_shard[*]
                                    |-> retag                  -> publish -> validate -> announce
```

learn    harvest_labels: harvest; retrain: retrain; gate_and_promote: promote_unless_reused
         (promote_through_gate scores both on today's holdout); retag: retag_after_promotion
tag      resolve_run: choose_partition + plan_run; publish: publish_run; validate:
         validate_run; `tagging tag`: tag_partition (plan, tag and publish in one process)
results  the TypedDicts the steps return (CandidateRef, GateOutcome, RunPlan, Publication)

Planning and tagging a shard are tagging.catalogue's (planning.plan_shards,
tagger.tag_shard_to_staging). The DAG-facing steps read paths from tagging.settings; the
others take them as arguments. Every failure is a TaggingError or RegistryError whose
message says what to do, which the DAG turns into a failed task without retries.
"""
