"""Base models: what jobs start from. Its own Django app (label ``base_models``), the lowest of the
domain apps: datasets count tokens with a base model's tokenizer, jobs train one, the registry
above them records what came out."""
