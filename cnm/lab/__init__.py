"""cnm lab: network labs in YAML that come up, check themselves, draw themselves and go.

See netns-lab/labs/FORMAT.md for the file format."""
