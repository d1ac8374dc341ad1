"""One module per vendor: its discovery of jobs, its status words, its payload shapes."""
