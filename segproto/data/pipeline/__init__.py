"""The shared data pipeline: the dataset base and file checks, transforms, batch augmentation,
samplers, class taxonomies and few-shot episodes; every dataset, real or generated, goes through it."""
