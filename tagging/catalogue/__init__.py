"""One day's catalogue partition, from input to published output.

layout    where every file lives (incoming/, tagged/, _staging/) and the published manifest
planning  the partition cut into shards of whole row groups
tagger    decode -> preprocess -> predict -> the tag columns, one shard at a time
publish   staged shards swapped in as tagged/dt=D in one atomic step
validate  a published partition checked against its input and the quality limits
job       plan, tag and publish in one process (the `tagging tag` command)
"""
