"""One day's catalogue partition, from input to published output.

layout    where every file lives (incoming/, tagged/, _staging/)
planning  the partition cut into shards of whole row groups
tagger    decode -> preprocess -> predict -> the tag columns, one shard at a time
table     the tagged Delta table: a day's commit and manifest, history, restore, changes
answers   a day's review answers (reviews/dt=D/answers.parquet) and how publishing applies them
quality   live quality: the model's tags graded on verified rows, and its check
publish   staged shards become the day's rows of the table in one commit
validate  a published partition checked against its input and the quality limits
published the read seam: published days, rows, schema and manifests (every reader)
publications  every publication of a day, on record
demo      a demo catalogue rendered from Fashion-MNIST test images
(plan + tag + publish in one process, `tagging tag`: tagging.pipeline.tag.tag_partition)
"""
