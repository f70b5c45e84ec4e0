"""YAML recipe presets shipped with coarse2fine (read with coarse2fine.config.load_config)."""
