"""Where training and test images come from: sources (folders, CIFAR batches, WebDataset
shards, digits), safe unpickling of CIFAR batch files, and test sets as arrays."""
