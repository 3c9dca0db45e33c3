"""Configuration: the YAML schema, its loader with file:line errors, and the roster."""

from mentorpulse.config.loader import config_path, json_schema, load_config
from mentorpulse.config.roster import RosterPairing, load_roster
from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.errors import ConfigError

__all__ = [
    "ConfigError",
    "MentorpulseConfig",
    "RosterPairing",
    "config_path",
    "json_schema",
    "load_config",
    "load_roster",
]
