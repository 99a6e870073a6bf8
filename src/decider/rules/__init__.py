"""Rules: files (YAML with places) become a CompiledRuleset (compiler) over one of two CEL
engines (cel), checked by lint and the profile schema, tested by their suites, explained
offline."""
